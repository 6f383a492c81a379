"""The singleton learner: durable feedback ingestion, gated refits, model broadcasts."""
