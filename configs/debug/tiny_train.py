# Tiny CPU training config for tests and the local demo (NOT a real model): the tiny_sample.py STDiT trained
# for 12 steps on synthetic clips (opensora_core.data.synthetic writes outputs/debug/synthetic/meta.csv).
#   python -m opensora_core.train configs/debug/tiny_train.py
dataset = dict(
    type="VideoTextDataset",
    data_path="outputs/debug/synthetic/meta.csv",
    num_frames=8,
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
    type="STDiT-XL/2",
    depth=2,
    hidden_size=64,
    num_heads=4,
    patch_size=(1, 4, 4),
    from_pretrained=None,
)
vae = dict(type="identity")
text_encoder = dict(
    type="t5",
    from_pretrained="debug/tiny-t5",
    model_max_length=16,
)
scheduler = dict(
    type="iddpm",
    timestep_respacing="",
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

batch_size = 4
lr = 1e-3
grad_clip = 1.0
