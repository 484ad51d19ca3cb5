# The local demo's model (`make demo`): a tiny STDiT trained on 16x16-pixel synthetic clips (one coloured shape
# moving; opensora_core.data.synthetic) on 2 CPU processes in a few minutes. NOT a real model: it exists to show
# the pipeline end to end and that training measurably learns (colour of the caption; see docs/pipeline.md).
#   torchrun --nproc-per-node 2 -m opensora_core.train configs/debug/demo.py --data-path DATA/meta.csv
dataset = dict(
    type="VideoTextDataset",
    data_path=None,  # set by the pipeline (--data-path)
    num_frames=8,
    frame_interval=1,
    image_size=(16, 16),
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
    num_sampling_steps=50,
    cfg_scale=4.0,
)

seed = 42
outputs = "outputs/demo"
tracking = dict(backend="none")

epochs = 1000
max_steps = 600
log_every = 25
ckpt_every = 0
ema_decay = 0.99

batch_size = 32
lr = 1e-3
grad_clip = 1.0
