"""Byte-level GPT trained under a fixed compute budget. THIS is the file agents edit.

Run by hand:  python train.py            (budget 60 s, prints progress)
Run by the daemon: env OVERNIGHT_BUDGET_S / _CHANNEL_FD / _MODEL_OUT / _SEED / _THREADS / _SCALE set.
Score: python prepare.py evaluate --model model.ovm   (the frozen metric, val bits per byte)

Reading order: config -> scale -> model -> data -> optimizer/schedule -> loop -> summary.
"""

# ---------------------------------------------------------------------------------------
# Config: edit these directly (plain literals only; the seed comes from the harness)
# ---------------------------------------------------------------------------------------
N_LAYER = 2            # transformer blocks
N_EMBD = 96            # residual stream width
N_HEAD = 4             # attention heads (N_EMBD must be divisible by N_HEAD)
MLP_MULT = 4           # MLP hidden width = MLP_MULT * N_EMBD
SEQ_LEN = 64           # context length in bytes (also used by the evaluation)
BATCH_SIZE = 16        # sequences per step (16 beat 32 at a 30 s budget: 2.93 vs 3.08 bpb)
LR = 3e-3              # peak AdamW learning rate
WARMUP_FRAC = 0.03     # linear warmup, as a fraction of the budget (of the planned steps)
FINAL_LR_FRAC = 0.1    # LR decays (cosine) to LR * FINAL_LR_FRAC at the end of the budget
WEIGHT_DECAY = 0.1     # AdamW weight decay on matrices (not on embeddings/norms)
BETA1 = 0.9            # AdamW beta1
BETA2 = 0.99           # AdamW beta2
GRAD_CLIP = 1.0        # max global grad norm (0 = off)
USE_BF16 = 0           # 1 = bf16 autocast (CUDA only; on CPU it measured 10x slower)
COMPILE = 0            # 1 = torch.compile (used on CUDA only; cold compile costs 12-45 s)
REPORT_EVERY_S = 1.0   # progress frame interval (budget-clock seconds; at most 1/20 of the budget)

import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import prepare  # noqa: E402  (import before torch: it sets OMP_WAIT_POLICY)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# ---------------------------------------------------------------------------------------
# Scale: the daemon's transfer check runs this file with OVERNIGHT_SCALE > 1 to ask whether a
# gain survives a bigger model. The one place where the config above is changed: width
# (rounded to a multiple of N_HEAD) and depth both grow by the factor.
# ---------------------------------------------------------------------------------------
SCALE = prepare.scale()
if SCALE > 1:
    N_EMBD = max(N_HEAD, round(N_EMBD * SCALE / N_HEAD) * N_HEAD)
    N_LAYER = max(1, round(N_LAYER * SCALE))

# ---------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(N_EMBD)
        self.qkv = nn.Linear(N_EMBD, 3 * N_EMBD)
        self.proj = nn.Linear(N_EMBD, N_EMBD)
        self.ln2 = nn.LayerNorm(N_EMBD)
        self.fc = nn.Linear(N_EMBD, MLP_MULT * N_EMBD)
        self.fc_out = nn.Linear(MLP_MULT * N_EMBD, N_EMBD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """model(idx: LongTensor[B, T]) -> logits FloatTensor[B, T, 256] (the harness contract)."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(prepare.VOCAB_SIZE, N_EMBD)
        self.pos = nn.Embedding(SEQ_LEN, N_EMBD)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.head = nn.Linear(N_EMBD, prepare.VOCAB_SIZE, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
            if name.endswith("fc_out.weight") or name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * N_LAYER))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


# ---------------------------------------------------------------------------------------
# Setup and data
# ---------------------------------------------------------------------------------------
threads = prepare.setup_threads()
seed = prepare.seed_everything()
device = prepare.get_device()
report = prepare.Reporter()
budget = prepare.Budget(device=device, reporter=report)  # sends the "calibrated" frame through it

train_data = prepare.load_split("train")  # uint8 tensor on CPU; exits 2 if data is bad
gen = torch.Generator().manual_seed(seed)


def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return prepare.get_batch(train_data, BATCH_SIZE, SEQ_LEN, device, gen)


model = GPT().to(device)
n_params = sum(p.numel() for p in model.parameters())
train_model = torch.compile(model) if (COMPILE and device == "cuda") else model
use_bf16 = bool(USE_BF16) and device == "cuda"

# ---------------------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------------------
decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "tok" not in n
         and "pos" not in n]
no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "tok" not in n
                                                           and "pos" not in n)]
optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
    lr=LR, betas=(BETA1, BETA2), fused=(device == "cuda"))


def lr_at(frac: float) -> float:
    """LR as a function of the fraction of the budget used (warmup, then cosine)."""
    if frac < WARMUP_FRAC:
        return LR * (frac + 1e-3) / WARMUP_FRAC
    t = (frac - WARMUP_FRAC) / max(1e-9, 1.0 - WARMUP_FRAC)
    return LR * (FINAL_LR_FRAC + (1.0 - FINAL_LR_FRAC) * 0.5 * (1.0 + math.cos(math.pi * t)))


# ---------------------------------------------------------------------------------------
# Training loop (only this part is charged to the budget)
# ---------------------------------------------------------------------------------------
report.start(n_params, budget)
model.train()
step, tokens, last_report, last_tokens = 0, 0, 0.0, 0
loss_sum, loss_n = 0.0, 0
report_every = min(REPORT_EVERY_S, budget.seconds / 20)  # a short run still draws a curve
budget.start()
while not budget.done():
    lr = lr_at(budget.fraction())
    for group in optimizer.param_groups:
        group["lr"] = lr
    x, y = get_batch()
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_bf16):
        logits = train_model(x)
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if GRAD_CLIP > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        prepare.fail(f"loss is {loss_value} at step {step}", report)
    step += 1
    tokens += x.numel()
    loss_sum, loss_n = loss_sum + loss_value, loss_n + 1
    now = budget.elapsed()
    if now - last_report >= report_every:
        report.progress(step, budget, loss_sum / loss_n, (tokens - last_tokens) /
                        max(1e-9, now - last_report), lr)
        last_report, last_tokens, loss_sum, loss_n = now, tokens, 0.0, 0
report.end(step, budget, tokens)
train_s, train_wall, train_cpu = budget.elapsed(), budget.wall(), budget.cpu()

# ---------------------------------------------------------------------------------------
# Hand-off and summary
# ---------------------------------------------------------------------------------------
t0 = time.perf_counter()
path = prepare.save_model(model, SEQ_LEN)
print(f"done: {step} steps, {tokens:,} tokens, {n_params:,} params, "
      f"{train_s:.1f}s {budget.clock} clock ({train_wall:.1f}s wall, {train_cpu:.1f}s cpu/thread), "
      f"{tokens / max(1e-9, train_s):,.0f} tok/s, export {time.perf_counter() - t0:.1f}s "
      f"-> {path}", file=sys.stderr)
