"""Train a CLIP model (Hyena or the open_clip baseline) with open_clip's contrastive loss; see
``hyena_vision.engine.clip``.

    python -m train.clip --config clip/hyena_clip_cifar
    python -m train.clip --config clip/hyena_clip_cifar model.name=clip_vit_cifar out_dir=runs/clip/vit
"""

from hyena_vision.engine.clip import main

if __name__ == "__main__":
    main()
