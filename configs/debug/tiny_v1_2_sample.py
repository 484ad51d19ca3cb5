# Tiny CPU sampling config in Open-Sora 1.2's shape, for tests and debugging (NOT a real model): an STDiT3 with
# 2 blocks of width 32, the 1.2 video VAE at tiny width built in code ("debug/tiny-vae-v1-2": the SD-style
# spatial VAE, H/W / 8, then the causal temporal VAE, 17 frames -> 5 latent frames), a tiny random T5
# ("debug/tiny-t5"), 10 rectified-flow steps with the resolution/frames timestep transform, and 1.2's prompt
# score (aes). The 1.2 flags work on it, e.g.
#   python -m opensora_core.sample configs/debug/tiny_v1_2_sample.py --prompt "a red ball"
#   python -m opensora_core.sample configs/debug/tiny_v1_2_sample.py --resolution 144p --aspect-ratio 16:9 \
#       --aes 5.5 --flow 4 --save-fps 12 --num-sampling-steps 3
num_frames = 17
frame_interval = 1
fps = 24
image_size = (32, 32)
multi_resolution = "STDiT2"
aes = 6.5

model = dict(
    type="STDiT3-XL/2",
    depth=2,
    hidden_size=32,
    num_heads=2,
    input_sq_size=32,
    from_pretrained=None,  # random weights unless --ckpt-path points at a tiny_v1_2_train checkpoint
)
vae = dict(
    type="OpenSoraVAE_V1_2",
    from_pretrained="debug/tiny-vae-v1-2",
    micro_frame_size=17,
    micro_batch_size=4,
)
text_encoder = dict(
    type="t5",
    from_pretrained="debug/tiny-t5",
    model_max_length=16,
)
scheduler = dict(
    type="rflow",
    use_timestep_transform=True,
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
save_dir = "outputs/debug/samples_v1_2"
