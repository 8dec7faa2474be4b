"""Pydantic models exchanged between SkinTriage's services and between training and serving."""
