"""Deployment: integer entropy parameters, int8 synthesis and the real-time decode pipeline."""
