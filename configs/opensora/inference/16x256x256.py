# Open-Sora 1.0: text-to-video, 16 frames at 256x256 (STDiT-XL/2, T5, SD VAE, IDDPM 100 steps).
#   python -m opensora_core.sample configs/opensora/inference/16x256x256.py --ckpt-path OpenSora-v1-HQ-16x256x256.pth
num_frames = 16
fps = 24 // 3
image_size = (256, 256)

# Define model
model = dict(
    type="STDiT-XL/2",
    space_scale=0.5,
    time_scale=1.0,
    enable_flashattn=True,  # used when flash-attn is importable on CUDA, sdpa otherwise
    enable_layernorm_kernel=True,
    from_pretrained="OpenSora-v1-HQ-16x256x256.pth",  # released 1.0 weights (hpcai-tech/Open-Sora)
)
vae = dict(
    type="VideoAutoencoderKL",
    from_pretrained="stabilityai/sd-vae-ft-ema",
    micro_batch_size=4,
)
text_encoder = dict(
    type="t5",
    from_pretrained="DeepFloyd/t5-v1_1-xxl",
    model_max_length=120,
)
scheduler = dict(
    type="iddpm",
    num_sampling_steps=100,
    cfg_scale=7.0,
    cfg_channel=3,  # 1.0 guides only the first 3 latent channels
)
dtype = "fp16"

# Condition
prompt_path = "./assets/texts/t2v_samples.txt"
prompt = None  # prompt has higher priority than prompt_path

# Others
batch_size = 1
seed = 42
save_dir = "./samples/samples/"
