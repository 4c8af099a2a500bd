"""Amalgamation methods, one module per paper or family, behind one registry."""

from . import (  # noqa: F401  (registration)
    aeme,
    aka,
    ant,
    auto,
    calibrated,
    cfl,
    clusterroute,
    coordinator,
    dfa,
    kd,
    mahalanobis,
    metabaselines,
    muki,
    multilabel,
    propagate,
    reference,
    refine,
    routing,
    semisupervised,
    simme,
    standardized,
    targetnet,
    uhc,
    venus,
)
from .base import REGISTRY, Context, Method, StudentOutput, get_method, register

__all__ = ["REGISTRY", "Context", "Method", "StudentOutput", "get_method", "register"]
