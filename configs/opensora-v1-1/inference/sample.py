# Open-Sora 1.1 text-to-video sampling with the released stage-3 STDiT2 (any resolution; 240x426 here).
#   python -m opensora_core.sample configs/opensora-v1-1/inference/sample.py --prompt "a beach at dawn" \
#       --num-frames 16 --image-size 240 426
num_frames = 16
frame_interval = 3  # videos are saved at fps // frame_interval = 8 fps
fps = 24
image_size = (240, 426)
multi_resolution = "STDiT2"

# Define model
model = dict(
    type="STDiT2-XL/2",
    from_pretrained="hpcai-tech/OpenSora-STDiT-v2-stage3",
    input_sq_size=512,
    qk_norm=True,
    enable_flashattn=True,
    enable_layernorm_kernel=True,
)
vae = dict(
    type="VideoAutoencoderKL",
    from_pretrained="stabilityai/sd-vae-ft-ema",
    cache_dir=None,  # e.g. "/mnt/hdd/cached_models"
    micro_batch_size=4,
)
text_encoder = dict(
    type="t5",
    from_pretrained="DeepFloyd/t5-v1_1-xxl",
    cache_dir=None,  # e.g. "/mnt/hdd/cached_models"
    model_max_length=200,
)
scheduler = dict(
    type="iddpm",
    num_sampling_steps=100,
    cfg_scale=7.0,
    cfg_channel=3,  # or None (= all 4 latent channels)
)
dtype = "bf16"

# Condition
prompt_path = "./assets/texts/t2v_samples.txt"
prompt = None  # prompt has higher priority than prompt_path

# Others
batch_size = 1
seed = 42
save_dir = "./samples/samples/"
