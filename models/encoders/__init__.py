"""One encoder per modality; each has `encode(x) -> (tokens (B, T, D), mask (B, T) bool)` and `lock()`."""
