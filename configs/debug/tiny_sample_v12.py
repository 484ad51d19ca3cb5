# Tiny Open-Sora 1.2-style sampling on CPU (seconds): a 1-block STDiT3 with random weights, rectified flow,
# the tiny random T5 with 1.2's 300 caption tokens, and 1.2's size names and prompt scores. The VAE is the
# identity until the 1.2 VAE's tiny variant is available. Try:
#   python -m opensora_core.sample configs/debug/tiny_sample_v12.py --aspect-ratio 16:9 --aes 5.5 --flow 4
resolution = "144p"
aspect_ratio = "1:1"
num_frames = 2
fps = 24
save_fps = 12
multi_resolution = "STDiT2"
aes = 6.5

model = dict(
    type="STDiT3-XL/2",
    depth=1,
    hidden_size=32,
    num_heads=2,
    patch_size=(1, 8, 8),
    input_sq_size=192,
    from_pretrained=None,
)
vae = dict(type="identity")
text_encoder = dict(
    type="t5",
    from_pretrained="debug/tiny-t5",
    model_max_length=300,
)
scheduler = dict(
    type="rflow",
    num_sampling_steps=3,
    cfg_scale=7.0,
)
dtype = "fp32"

prompt = ["a red ball bouncing on a wooden floor"]
batch_size = 1
seed = 42
save_dir = "outputs/debug/samples_v12"
