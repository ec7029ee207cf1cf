"""The core: configuration, models, the plugin manager, the message bus, the command registry.

Internal API; plugins import what they need from ``sealrelay``.
"""
