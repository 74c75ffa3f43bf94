"""Time-series code shared by the forecasting apps (crypto_forecast, stockformer): metrics, chronological
splits and windows, causal technical indicators, forecast plots and a windowed data module."""
