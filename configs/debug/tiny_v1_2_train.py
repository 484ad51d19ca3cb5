# Tiny CPU training config in Open-Sora 1.2's shape, for tests and debugging (NOT a real model): the
# tiny_v1_2_sample.py STDiT3 + tiny 1.2 video VAE ("debug/tiny-vae-v1-2": 17 frames -> 5 latent frames) trained
# with rectified flow on synthetic 17-frame clips:
#   python -m opensora_core.data.synthetic outputs/debug/synthetic_v1_2 --frames 17 --size 32
#   python -m opensora_core.train configs/debug/tiny_v1_2_train.py
dataset = dict(
    type="VideoTextDataset",
    data_path="outputs/debug/synthetic_v1_2/meta.csv",
    num_frames=17,
    frame_interval=1,
    image_size=(32, 32),
    transform_name="center",
)
num_workers = 0

dtype = "fp32"
grad_checkpoint = False
plugin = "ddp"  # torch DDP; gloo on CPU
sp_size = 1

model = dict(
    type="STDiT3-XL/2",
    depth=2,
    hidden_size=32,
    num_heads=2,
    input_sq_size=32,
    from_pretrained=None,
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
    sample_method="logit-normal",
)

seed = 42
outputs = "outputs/debug"
wandb = False
tracking = dict(backend="none")  # set backend="mlflow" (and uri) to log to MLflow

epochs = 1000
max_steps = 12
log_every = 1
ckpt_every = 6
load = None

batch_size = 2
lr = 1e-3
grad_clip = 1.0
