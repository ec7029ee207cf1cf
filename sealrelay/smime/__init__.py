"""The S/MIME and CMS layer: signing, verification, encryption and decryption of MIME entities.

This package is a library used by the built-in plugin ``crypto_smime``; it knows nothing of the
bus, the configuration or the store, only bytes, certificates and keys.
"""
