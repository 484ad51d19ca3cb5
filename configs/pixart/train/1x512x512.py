# PixArt-XL/2 text-to-image training at 512x512 from PixArt-alpha 512 weights.
# Open-Sora 1.0 layout (top-level dataset keys -> dataset=dict(type="DatasetFromCSV", ...)); pass --data-path.
num_frames = 1
frame_interval = 1
image_size = (512, 512)

# Define dataset
root = None
data_path = None
use_image_transform = True
num_workers = 4

# Define acceleration
dtype = "bf16"
grad_checkpoint = True
plugin = "zero2"
sp_size = 1

# Define model
model = dict(
    type="PixArt-XL/2",
    space_scale=1.0,
    time_scale=1.0,
    no_temporal_pos_emb=True,
    from_pretrained="PixArt-XL-2-512x512.pth",
    enable_flashattn=True,
    enable_layernorm_kernel=True,
)
vae = dict(
    type="VideoAutoencoderKL",
    from_pretrained="stabilityai/sd-vae-ft-ema",
)
text_encoder = dict(
    type="t5",
    from_pretrained="DeepFloyd/t5-v1_1-xxl",
    model_max_length=120,
    shardformer=True,
)
scheduler = dict(
    type="iddpm",
    timestep_respacing="",
)

# Others
seed = 42
outputs = "outputs"
wandb = False

epochs = 1000
log_every = 10
ckpt_every = 1000
load = None

batch_size = 32
lr = 2e-5
grad_clip = 1.0
