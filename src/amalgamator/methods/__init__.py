"""Amalgamation methods, one module per paper or family, behind one registry."""

from . import calibrated, cfl, coordinator, dfa, kd, muki, reference, semisupervised, uhc  # noqa: F401  (registration)
from .base import REGISTRY, Context, Method, StudentOutput, get_method, register

__all__ = ["REGISTRY", "Context", "Method", "StudentOutput", "get_method", "register"]
