"""LightningDataModules for each domain."""
