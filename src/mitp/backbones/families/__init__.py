"""Backbone families, one module (or package) each, found automatically.

A family module defines its towers and registers the specs it builds with
:func:`mitp.backbones.register_backbone`; nothing else needs editing to add one
(docs/guides/adding-a-backbone.md).
"""
