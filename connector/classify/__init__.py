"""The classification cascade and its tiers: rules.py, local.py, cascade.py."""
