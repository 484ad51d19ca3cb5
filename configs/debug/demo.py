# The local demo's model (`make demo`): a tiny STDiT trained on synthetic clips (one coloured square or circle
# moving on black, 16x16 px; opensora_core.data.synthetic) by 2 CPU processes in about 4-5 minutes. NOT a real
# model: it shows the pipeline end to end and that training measurably learns the caption's colour, and the motion
# direction only partly (evaluation compares the trained EMA weights with the untrained model; the demo also plots
# both accuracies of every checkpoint against training minutes; numbers in docs/pipeline.md).
#   torchrun --nproc-per-node 2 -m opensora_core.train configs/debug/demo.py --data-path DATA/meta.csv
#
# Tuning notes (measured on 2 CPU cores; colour accuracy of the EMA weights on the 32 synthetic captions, 50
# sampling steps, cfg 7; the untrained model scores 22-25%):
# - Open-Sora's IDDPM eps-prediction, caption only through cross-attention on a tiny random T5 (32-d): at lr 1e-3
#   the model ignored the caption entirely after 300 steps (same loss with right and wrong captions), with
#   eps- and x0-prediction alike. lr 3e-3 makes the caption pathway learn; lr 5e-3 gave dim, shapeless videos.
# - 4 frames (every 2nd of 8) halve the tokens, so 1000 steps of batch 2x32 fit in about 4-5 minutes.
# - Training on the 1000-step schedule reached 50% after 1000 steps; the same run on a 50-step respaced
#   schedule (the steps sampling uses) reached 97%. The demo uses the latter.
# - ema_decay 0.95: 0.9999 would keep the EMA at its initialisation in a run this short, and 0.99 with lr 3e-3
#   averaged into blank videos.
# - The cosine schedule diverged (loss 1e5).
# Motion direction (issue 13 asks >= 60%; NOT reached; chance 25%). Measured 2026-12-02 on the shared 2-core machine
# (load 6-18, so wall times are 2-3x an idle machine's; step counts are what to compare), 32 captions, cfg 7, seed 0:
# - The scorer is exact: 100% colour and direction on the training tensors (4 frames every 2nd of 8, identity VAE,
#   [-1, 1]) and on eval-caption clips rendered and decoded back from mp4; same caption template in data and
#   prompts; the shape travels ~7 px over the 4 sampled frames, no wrap or bounce.
# - Why the old demo scored BELOW chance (9-12%): the model draws the union of the whole path in every frame (it
#   does not tie position to frame index or direction), so the centroid shift is noise; clips whose shape shows in
#   fewer than 2 frames score direction "none" (28% of them) and a static shape scores "left" (a tie).
# - Data: paths through the middle of the frame (synthetic jitter=1, workflows/demo.py) raise colour from 78% to
#   91% at 1000 steps (direction unchanged: 9%); the data stays balanced over colour x shape x direction.
# - Sampling steps: one 1000-step checkpoint scored direction 9% with 50 IDDPM steps and 31% with 100, 250 or 1000
#   (colour 91-94%), but the demo run's own 1000-step checkpoint scored 12.5% with both 50 and 100: not a fix, the
#   demo keeps 50.
# - The demo as committed (1000 steps, 50 sampling steps): colour 90.6%, direction 12.5%, validation loss 98.4%
#   below the untrained model's; its curve: direction 9.4 / 6.2 / 12.5 / 12.5% at steps 250-1000.
# - Tried, no better at 1000 steps: x0-prediction (scheduler.predict_xstart; direction 25% at 500 steps, 16% at
#   1000, colour 72%, patchy samples); batch 16 x 2000 steps (colour 25%, direction 6% at step 1000); Latte-XL/2
#   with the tiny CLIP (temporal table in the residual stream; colour 81%, direction 9%); patch (2, 4, 4), two
#   frames per token (colour 25%, direction 16-22% at steps 250-1000); guidance 1-2.5 (fewer
#   shapes at all). Next candidates: more steps than fit in the demo's budget, rflow (needs a validation loss for
#   rflow, eval.val_loss refuses it), a deeper model.
dataset = dict(
    type="VideoTextDataset",
    data_path=None,  # set by the pipeline (dataset.data_path=...) or --data-path
    num_frames=4,
    frame_interval=2,
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
    patch_size=(1, 4, 4),  # 4x4 tokens per 16x16 frame
    from_pretrained=None,
)
vae = dict(type="identity")  # latent = pixels
text_encoder = dict(
    type="t5",
    from_pretrained="debug/tiny-t5",  # tiny random T5 built in code (offline, deterministic)
    model_max_length=16,
)
scheduler = dict(
    type="iddpm",
    timestep_respacing="50",  # a 50-step schedule (Open-Sora trains on all 1000; see the tuning notes)
    cfg_scale=7.0,
)

seed = 42
outputs = "outputs/demo"
tracking = dict(backend="none")  # the pipeline switches MLflow on

epochs = 10000
max_steps = 1000
log_every = 50
ckpt_every = 250  # intermediate checkpoints: the demo evaluates each one for its learning curve
# A labelled grid of these prompts every 200 steps (MLflow image `preview` with a step slider; about 1 s each
# on one busy CPU thread), sampled as the evaluation does: the 50-step schedule the model trains on.
preview_every = 200
preview_prompts = [
    "a red square moving left",
    "a blue circle moving right",
    "a green square moving up",
    "a yellow circle moving down",
]
preview_sampling_steps = 50
ema_decay = 0.95

batch_size = 32  # per process; 2 processes
lr = 3e-3
grad_clip = 1.0
