"""The loop's two channels: the bus (Pub/Sub: corrections in, model updates out) and the registry (S3: model versions)."""
