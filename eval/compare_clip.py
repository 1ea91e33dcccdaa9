"""Compare finished CLIP runs: zero-shot top-1 and retrieval recall with 95% Wilson intervals (Markdown + PNG);
see ``hyena_vision.engine.clip.compare_main``.

    python -m eval.compare_clip runs/clip/hyena_clip_cifar runs/clip/clip_vit_cifar --out runs/clip/compare
"""

from hyena_vision.engine.clip import compare_main

if __name__ == "__main__":
    compare_main()
