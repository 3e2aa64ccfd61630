#!/usr/bin/env python3
"""PyTorch reference of magc's phase1 model, to time against `magc bench`.

Same shapes, layers and training step as models/phase1.graph and models/blocks.graph
(maths: MATH.md §1, §2, §4): embedding; [mamba, mamba, moe] x 3 then mamba x 2;
final RMSNorm and a head tied to the embedding; cross-entropy plus the Switch aux
losses; backward; global-norm clipping at 1.0; AdamW (lr 1e-3, betas 0.9/0.95,
eps 1e-8, weight decay 0.1 except norms, conv_b, dt_bias, A_log and D). All fp32
with TF32 off, so both sides do the same arithmetic.

    python3 bench/phase1_torch.py --mode eager            # one JSON line on stdout
    python3 bench/phase1_torch.py --mode compile --steps 20
    python3 bench/phase1_torch.py --check                 # CPU, tiny sizes: scan, MoE, a train step
"""

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


@dataclass
class Config:
    vocab: int = 50257
    d_model: int = 512
    d_state: int = 16
    d_conv: int = 4
    n_experts: int = 8
    top_k: int = 2
    d_ff: int = 1024
    aux_alpha: float = 0.01
    # m = mamba, e = moe: phase1's repeat 3 { 2 x mamba; moe }, then 2 x mamba.
    layout: str = "mmemmemmemm"
    scan_chunk: int = 64

    @property
    def d_inner(self):
        return 2 * self.d_model

    @property
    def dt_rank(self):
        return (self.d_model + 15) // 16

    @property
    def n_layers(self):
        return len(self.layout)


PHASE1 = Config()
TINY = Config(vocab=61, d_model=32, d_state=4, d_conv=4, n_experts=4, top_k=2, d_ff=24,
              layout="meme", scan_chunk=8)

NO_DECAY = ("norm", "conv_b", "dt_bias", "A_log", "D")


# ---------------------------------------------------------------------------
# Selective scan
# ---------------------------------------------------------------------------

def _shift(t, k, dim):
    """t moved k places later along dim, zeros in front (t[i-k], or 0 for i < k)."""
    pad = [0, 0] * (t.dim() - 1 - dim) + [k, 0]
    return F.pad(t.narrow(dim, 0, t.size(dim) - k), pad)


def _linear_scan(a, x, dim):
    """s_t = a_t * s_{t-1} + x_t along dim with s_{-1} = 0, in log2(len) doubling steps.

    Hillis-Steele: after the step of span k, x_t holds the sum over the last 2k inputs
    and a_t the product of the last 2k decays. Only products of decays in (0, 1] are
    formed, never quotients, so nothing overflows however strong the decay.
    """
    n = x.size(dim)
    k = 1
    while k < n:
        x = x + a * _shift(x, k, dim)
        if 2 * k < n:  # the last step's decay product is never read
            a = a * _shift(a, k, dim)
        k *= 2
    return x


def selective_scan(u, delta, A, B, C, D, chunk=64):
    """Mamba's selective scan (MATH.md §1 steps 6-8), chunked and parallel, fp32.

    u, delta: (b, L, E); A: (E, N) (already -exp(A_log)); B, C: (b, L, N); D: (E,).
    Within a chunk of `chunk` steps: decays from log space (exp of dt*A, and the
    cumulative decay since the chunk start as exp of a cumulative sum), the recurrence
    by doubling. Across chunks: the chunk-end states, carried by the same doubling scan
    over the chunk axis, then added in with the cumulative decays.
    """
    b, L, E = u.shape
    N = A.size(1)
    T = max(1, min(chunk, L))
    pad = (-L) % T
    if pad:  # zero dt and input after the end: the padded steps change nothing before it
        u, delta, B, C = (F.pad(t, (0, 0, 0, pad)) for t in (u, delta, B, C))
    nc = (L + pad) // T
    dA = (delta.unsqueeze(-1) * A).view(b, nc, T, E, N)  # log decays, <= 0
    a = torch.exp(dA)
    cum = torch.exp(dA.cumsum(2))  # decay from the chunk's start through step t
    bu = ((delta * u).unsqueeze(-1) * B.unsqueeze(2)).view(b, nc, T, E, N)
    s = _linear_scan(a, bu, 2)  # states as if each chunk started from 0
    if nc > 1:
        # The state entering chunk c is the scan of the chunk-end states, shifted by one.
        carried = _linear_scan(cum[:, :, -1], s[:, :, -1], 1)
        s = s + cum * _shift(carried, 1, 1).unsqueeze(2)
    y = torch.einsum("bctdn,bctn->bctd", s, C.view(b, nc, T, N)).reshape(b, nc * T, E)
    return y[:, :L] + D * u[:, :L]


def selective_scan_naive(u, delta, A, B, C, D):
    """The recurrence one time step at a time (only for --check)."""
    b, L, E = u.shape
    s = u.new_zeros(b, E, A.size(1))
    ys = []
    for t in range(L):
        dt = delta[:, t].unsqueeze(-1)
        s = torch.exp(dt * A) * s + dt * u[:, t].unsqueeze(-1) * B[:, t].unsqueeze(1)
        ys.append((s * C[:, t].unsqueeze(1)).sum(-1) + D * u[:, t])
    return torch.stack(ys, 1)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _kaiming(*shape, gain=1.0):
    # kaiming_uniform(a = sqrt(5)) over the last (contracted) dimension, as magc's init
    bound = gain * math.sqrt(6 / ((1 + 5) * shape[-1]))
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


# The layers' arithmetic lives in plain functions of tensors, so that --mode compile
# compiles each once and every layer of a kind shares the graph (no guards on module
# identity). FN maps a name to the function used, compiled or not.

def mamba_fn(h, norm, in_proj, conv_w, conv_b, x_proj, dt_proj, dt_bias, A_log, D, out_proj,
             chunk):
    L = h.size(1)
    E, N, R = conv_w.size(0), A_log.size(1), dt_proj.size(1)
    x, z = F.linear(rmsnorm(h, norm), in_proj).split(E, -1)
    # causal depthwise conv: left pad d_conv-1; conv_w[:, -1] meets the current step
    xc = F.conv1d(x.transpose(1, 2), conv_w.unsqueeze(1), conv_b,
                  padding=conv_w.size(1) - 1, groups=E)[..., :L]
    u = F.silu(xc.transpose(1, 2))
    dt, B, C = F.linear(u, x_proj).split([R, N, N], -1)
    delta = F.softplus(F.linear(dt, dt_proj) + dt_bias)
    y = selective_scan(u, delta, -torch.exp(A_log), B, C, D, chunk)
    return h + F.linear(y * F.silu(z), out_proj)


def moe_route_fn(h, norm, router, top_k, alpha):
    """Router, top-k, renormalised weights, the (token, choice) pairs sorted by expert
    (dropless: T*k rows), the rows gathered, and the Switch aux loss."""
    X = router.size(0)
    x = rmsnorm(h, norm).reshape(-1, h.size(-1))
    p = torch.softmax(F.linear(x, router), -1)
    top, choice = p.topk(top_k, -1)
    weight = top / top.sum(-1, keepdim=True)
    flat = choice.reshape(-1)
    order = torch.argsort(flat, stable=True)
    rows = order // top_k
    hot = (flat.unsqueeze(1) == torch.arange(X, device=flat.device))
    counts = hot.sum(0)
    # f_i: share of tokens whose top-1 is i (no gradient); P_i: mean router probability
    f = hot.view(-1, top_k, X)[:, 0].to(p.dtype).mean(0)
    aux = alpha * X * (f * p.mean(0)).sum()
    return x.index_select(0, rows), rows, weight.reshape(-1).index_select(0, order), counts, aux


def expert_fn(x, w13, w2):
    gate, up = F.linear(x, w13).chunk(2, -1)
    return F.linear(F.silu(gate) * up, w2)


def moe_combine_fn(h, ys, ws, rows):
    y = ys.new_zeros(h.size(0) * h.size(1), h.size(2)).index_add(0, rows, ys * ws.unsqueeze(1))
    return h + y.view_as(h)


def head_loss_fn(h, norm_f, embed, targets):
    logits = F.linear(rmsnorm(h, norm_f), embed)  # head tied to the embedding
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


FN = {"mamba": mamba_fn, "route": moe_route_fn, "expert": expert_fn,
      "combine": moe_combine_fn, "head": head_loss_fn}


def compile_fns():
    import torch._dynamo  # not loaded by `import torch` in every version

    dyn = torch._dynamo.config
    for key in ("cache_size_limit", "recompile_limit"):  # renamed in newer versions
        try:
            setattr(dyn, key, max(64, getattr(dyn, key)))
        except (AttributeError, TypeError, ValueError):
            pass
    for name, fn in list(FN.items()):
        # an expert's row count changes every step: one dynamic-shape graph for all
        FN[name] = torch.compile(fn, dynamic=(name == "expert"))


class Mamba(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D, E, N, R = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.chunk = cfg.scan_chunk
        self.norm = nn.Parameter(torch.ones(D))
        self.in_proj = _kaiming(2 * E, D)
        self.conv_w = _kaiming(E, cfg.d_conv)
        cb = 1 / math.sqrt(cfg.d_conv)
        self.conv_b = nn.Parameter(torch.empty(E).uniform_(-cb, cb))
        self.x_proj = _kaiming(R + 2 * N, E)
        db = 1 / math.sqrt(R)
        self.dt_proj = nn.Parameter(torch.empty(E, R).uniform_(-db, db))
        lo, hi = math.log(1e-3), math.log(1e-1)
        dt = torch.exp(torch.rand(E) * (hi - lo) + lo).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = _kaiming(D, E, gain=1 / math.sqrt(cfg.n_layers))

    def forward(self, h):
        return FN["mamba"](h, self.norm, self.in_proj, self.conv_w, self.conv_b, self.x_proj,
                           self.dt_proj, self.dt_bias, self.A_log, self.D, self.out_proj,
                           self.chunk)


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D, X, F_ = cfg.d_model, cfg.n_experts, cfg.d_ff
        self.top_k, self.alpha = cfg.top_k, cfg.aux_alpha
        self.norm = nn.Parameter(torch.ones(D))
        self.router = _kaiming(X, D)
        self.w13 = _kaiming(X, 2 * F_, D)  # rows [gate | up]
        self.w2 = _kaiming(X, D, F_)

    def forward(self, h):
        xs, rows, ws, counts, aux = FN["route"](h, self.norm, self.router, self.top_k, self.alpha)
        sizes = counts.tolist()  # host sync: each expert runs on its own rows only
        ys = [FN["expert"](part, self.w13[e], self.w2[e])
              for e, part in enumerate(xs.split(sizes)) if sizes[e]]
        return FN["combine"](h, torch.cat(ys), ws, rows), aux


class Phase1(nn.Module):
    def __init__(self, cfg, remat=False):
        super().__init__()
        self.cfg, self.remat = cfg, remat
        self.embed = nn.Parameter(torch.randn(cfg.vocab, cfg.d_model) * 0.02)
        self.layers = nn.ModuleList(Mamba(cfg) if c == "m" else MoE(cfg) for c in cfg.layout)
        self.norm_f = nn.Parameter(torch.ones(cfg.d_model))

    def forward(self, tokens, targets):
        h = F.embedding(tokens, self.embed)
        aux = h.new_zeros(())
        for layer in self.layers:
            if self.remat:  # as phase1.graph's checkpoint { } around every layer
                out = torch.utils.checkpoint.checkpoint(layer, h, use_reentrant=False)
            else:
                out = layer(h)
            if isinstance(out, tuple):
                h, a = out
                aux = aux + a
            else:
                h = out
        return FN["head"](h, self.norm_f, self.embed, targets) + aux


def make_optimizer(model, lr, kind):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.split(".")[-1] in NO_DECAY or name == "norm_f" else decay).append(p)
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {"fused": True} if kind == "fused" else {"foreach": kind == "foreach"}
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, **kw)


def make_step(model, opt, mode):
    if mode == "compile":
        compile_fns()
    params = list(model.parameters())

    def step(tokens, targets):
        opt.zero_grad(set_to_none=True)
        loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss
    return step


# ---------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------

def fp32_exact():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def bench(args):
    fp32_exact()
    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    cfg = TINY if args.tiny else PHASE1
    cfg.scan_chunk = args.scan_chunk or cfg.scan_chunk
    model = Phase1(cfg, remat=args.remat == "layer").to(dev)
    adam = args.adam or ("fused" if dev.type == "cuda" else "plain")
    opt = make_optimizer(model, args.lr, adam)
    step = make_step(model, opt, args.mode)
    g = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    tokens = torch.randint(0, cfg.vocab, (args.batch, args.seq + 1), generator=g).to(dev)
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    first_loss = step(inputs, targets).item()
    sync()
    first = time.perf_counter() - t0
    for _ in range(args.warmup):
        step(inputs, targets)
    sync()
    times = []
    loss = first_loss
    for _ in range(args.steps):
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step(inputs, targets)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            loss = step(inputs, targets)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times) if times else float("nan")
    out = {
        "mode": args.mode,
        "batch": args.batch,
        "seq": args.seq,
        "params": sum(p.numel() for p in model.parameters()),
        "first_step_s": round(first, 4),
        "step_s_median": round(med, 6),
        "tokens_per_s": round(args.batch * args.seq / med, 1) if times else None,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "steps": len(times),
        "step_s_min": round(min(times), 6) if times else None,
        "step_s_max": round(max(times), 6) if times else None,
        "first_loss": round(first_loss, 4),
        "last_loss": round(float(loss), 4),
        "remat": args.remat,
        "adamw": adam,
        "scan_chunk": cfg.scan_chunk,
        "model": "tiny" if args.tiny else "phase1",
        "torch": torch.__version__,
        "tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if dev.type == "cuda":
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    print(json.dumps(out), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


# ---------------------------------------------------------------------------
# --check: CPU, tiny sizes
# ---------------------------------------------------------------------------

def _relerr(a, b):
    """max |a - b| over max |b|: elementwise relative error is meaningless near 0."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


def check_scan(b, L, E, N, chunk, dt_scale, seed):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)
    u, B, C, D = r(b, L, E), r(b, L, N), r(b, L, N), r(E)
    delta = F.softplus(r(b, L, E)) * dt_scale
    A_log = torch.log(torch.arange(1, N + 1, dtype=torch.float64)).repeat(E, 1) + 0.1 * r(E, N)
    ins64 = [t.clone().requires_grad_() for t in (u, delta, A_log, B, C, D)]
    ins32 = [t.float().clone().requires_grad_() for t in (u, delta, A_log, B, C, D)]
    dy = r(b, L, E)

    def run(fn, ins, **kw):
        u_, d_, al, B_, C_, D_ = ins
        y = fn(u_, d_, -torch.exp(al), B_, C_, D_, **kw)
        (y * dy.to(y.dtype)).sum().backward()
        return y.detach(), [t.grad for t in ins]
    ref, gref = run(selective_scan_naive, ins64)
    got, ggot = run(selective_scan, ins32, chunk=chunk)
    errs = {"y": _relerr(got, ref)}
    for name, g1, g0 in zip(("du", "ddelta", "dA_log", "dB", "dC", "dD"), ggot, gref):
        errs[name] = _relerr(g1, g0)
    return errs


def check_moe():
    """Sorted, per-expert dispatch against every expert on every token, masked (float64)."""
    torch.manual_seed(3)
    cfg = TINY
    m = MoE(cfg).double()
    h = torch.randn(2, 13, cfg.d_model, dtype=torch.float64)
    y, aux = m(h)
    x = rmsnorm(h, m.norm).reshape(-1, cfg.d_model)
    p = torch.softmax(x @ m.router.T, -1)
    top, choice = p.topk(cfg.top_k, -1)
    w = torch.zeros_like(p).scatter(1, choice, top / top.sum(-1, keepdim=True))
    dense = sum(w[:, e:e + 1] * expert_fn(x, m.w13[e], m.w2[e]) for e in range(cfg.n_experts))
    want = h + dense.view_as(h)
    f = torch.bincount(choice[:, 0], minlength=cfg.n_experts).double() / x.size(0)
    aux_want = cfg.aux_alpha * cfg.n_experts * (f * p.mean(0)).sum()
    return {"y": _relerr(y, want), "aux": abs(aux.item() - aux_want.item()) / aux_want.item()}


def check_train():
    """A tiny model trains: the loss on one fixed batch falls over a few eager steps."""
    fp32_exact()
    torch.manual_seed(0)
    model = Phase1(TINY)
    step = make_step(model, make_optimizer(model, 1e-2, "plain"), "eager")
    tok = torch.randint(0, TINY.vocab, (2, 21))
    losses = [step(tok[:, :-1], tok[:, 1:]).item() for _ in range(8)]
    return losses


def check():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    ok = True
    cases = [  # (b, L, E, N, chunk, dt scale): ragged last chunk, one chunk, strong decay
        (2, 37, 6, 4, 8, 1.0, 1),
        (1, 64, 5, 3, 16, 0.1, 2),
        (2, 20, 4, 4, 64, 1.0, 3),
        (2, 50, 4, 16, 8, 8.0, 4),
        (1, 33, 3, 2, 1, 1.0, 5),
    ]
    for b, L, E, N, chunk, scale, seed in cases:
        errs = check_scan(b, L, E, N, chunk, scale, seed)
        worst = max(errs.values())
        good = worst < 1e-5
        ok &= good
        print(f"scan b={b} L={L} E={E} N={N} chunk={chunk} dt*{scale}: "
              f"max rel err {worst:.2e} ({', '.join(f'{k} {v:.1e}' for k, v in errs.items())}) "
              f"{'ok' if good else 'FAIL'}")
    errs = check_moe()
    good = max(errs.values()) < 1e-12
    ok &= good
    print(f"moe dispatch vs dense: y {errs['y']:.1e}, aux {errs['aux']:.1e} {'ok' if good else 'FAIL'}")
    losses = check_train()
    good = all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 0.1
    ok &= good
    print(f"tiny train step x{len(losses)}: loss {losses[0]:.4f} -> {losses[-1]:.4f} "
          f"{'ok' if good else 'FAIL'}")
    print("check: " + ("all ok" if ok else "FAILED"))
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20, help="timed steady-state steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--remat", choices=["none", "layer"], default="none",
                    help="layer: recompute every layer in backward, as phase1.graph's checkpoints")
    ap.add_argument("--adam", choices=["fused", "foreach", "plain"], default=None,
                    help="AdamW implementation (default fused on CUDA)")
    ap.add_argument("--scan-chunk", type=int, default=0, help="scan chunk length (default 64)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a smoke test without a GPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the JSON line to this file")
    ap.add_argument("--check", action="store_true",
                    help="on the CPU: chunked scan vs a sequential one, MoE dispatch, a tiny train")
    args = ap.parse_args(argv)
    if args.check:
        return check()
    if args.mode == "compile" and not hasattr(torch, "compile"):
        sys.exit(f"torch {torch.__version__} has no torch.compile")
    bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
