# Tiny CPU sampling config for tests and the local demo (NOT a real model): an STDiT with 2 blocks of width
# 64, no VAE (latent = pixels, 3 channels), a tiny random T5 built in code ("debug/tiny-t5"), 10 IDDPM steps.
#   python -m opensora_core.sample configs/debug/tiny_sample.py
num_frames = 8
frame_interval = 1
fps = 8
image_size = (32, 32)

model = dict(
    type="STDiT-XL/2",
    depth=2,
    hidden_size=64,
    num_heads=4,
    patch_size=(1, 4, 4),
    from_pretrained=None,  # random weights unless --ckpt-path points at a tiny_train checkpoint
)
vae = dict(type="identity")
text_encoder = dict(
    type="t5",
    from_pretrained="debug/tiny-t5",
    model_max_length=16,
)
scheduler = dict(
    type="iddpm",
    num_sampling_steps=10,
    cfg_scale=7.0,
)
dtype = "fp32"

prompt = [
    "a red ball bouncing on a wooden floor",
    "a blue cube spinning slowly",
]
batch_size = 2
seed = 42
save_dir = "outputs/debug/samples"
