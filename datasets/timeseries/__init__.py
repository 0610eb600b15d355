"""Multivariate probabilistic forecasting data: GluonTS datasets, CSV files, covariates and windows."""
