"""Planning a run before renting devices: per-device memory estimates."""
