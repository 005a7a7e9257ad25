"""Per-table data contracts (YAML); loaded by data_contracts.contract.load_contracts. A package so that the YAML
files ship with the wheel like the rest of data_contracts."""
