"""`mitp serve`: a trained model behind HTTP (FastAPI + uvicorn), with request batching and a web page."""

from .app import create_app
from .batcher import Batcher
from .local import running

__all__ = ["Batcher", "create_app", "running"]
