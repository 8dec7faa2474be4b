"""Inference worker: Celery task `inference.predict` over the model bundle's Predictor."""
