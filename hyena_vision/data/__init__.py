"""Data: image datasets, transforms and samplers (``images``), webdataset shards (``shards``), CIFAR-10 decoded in
memory with batched augmentation (``cifar_memory``), and text data.

Submodules are imported on demand (``from hyena_vision.data.images import image_dataset``) so that importing one
kind of data never pulls in another's dependencies.
"""
