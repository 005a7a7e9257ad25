"""tasks.validation"""
