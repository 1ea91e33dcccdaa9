"""Data: image datasets, transforms and samplers (``images``), webdataset shards (``shards``), and text data.

Submodules are imported on demand (``from hyena_vision.data.images import image_dataset``) so that importing one
kind of data never pulls in another's dependencies.
"""
