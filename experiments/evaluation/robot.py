"""Swap-table evaluation: the Diffusion Forcing policy with its memory in the latent (docs/experiments.md §4).

``num_episodes`` seeded episodes (configuration ``i % 2``, placement from ``default_rng([seed + 20000, i])``, never a
training or test demonstration) run side by side. At each control step k the policy samples the next token
``[o_{(k+1)H}, a_{kH..kH+H−1}]`` from the latent with the configured sampler (``plan_tokens`` tokens, the first one
executed), executes its H actions, and then commits the *real* token (the observation reached, the actions executed)
to the latent as a clean token. Modes:

* ``memory``: the latent carries everything since the first observation: the policy's only memory;
* ``memoryless``: the latent is re-encoded from the current observation before every plan (``z = enc(o)``), the
  baseline that cannot know which configuration it is in once the first object has moved;
* ``memory_flagged``: as ``memory``, but a token whose observation is known to be corrupted (see below) is committed
  at noise level ``flag_level`` instead of as clean, so the latent leans on its prior (paper §4.4);
* ``memory_imputed``: as ``memory_flagged``, but a flagged token's observation is replaced by the one the model itself
  predicted for it (the observation part of the token it sampled, whose actions were executed) and the token is
  committed as clean: the latent keeps its own belief rather than a corrupted or down-weighted observation. Not in
  the paper, which commits flagged observations at a noise level; a named alternative to ``memory_flagged``;
* ``memory_surprise``: no flag is given; the model's own surprise decides. A token whose observation differs from
  the one the model itself predicted for it by more than ``surprise_threshold`` (mean squared difference in
  normalised units) is treated as flagged, the rest are committed as clean. ``surprise_commit`` says how a surprising
  token is committed: ``flagged`` (at ``flag_level``, as ``memory_flagged`` does; the paper's treatment of a noisy
  observation) or ``imputed`` (its observation replaced by the prediction, as ``memory_imputed`` does);
* ``obs_history``: the Diffusion-Policy-like baseline (a model trained with ``dataset.layout=chunk_policy``): the
  action chunk is sampled from the initial latent, conditioned on the last two observations only (states as the
  token's condition; camera frames through the encoder of z_0).

Corruption (``corruption``) replaces the observation the policy receives, for the tokens ``corrupt_tokens = [first,
last)`` (by default the steps around the first decision that needs memory), before it enters the latent or the
observation history: ``occlusion`` (all zeros, a blacked-out camera), ``noise`` (``N(0, noise_std²)`` added to every
number) or ``distractor`` (a look-alike of object 2 in the empty slot: rendered into both cameras for image tokens,
reported as object 2's position for state tokens). The environment's physics is untouched.

Metrics per mode: ``success_rate`` with its 95 % Wilson interval (``success_low``, ``success_high``), the same per
configuration (``config0/…``, ``config1/…``), ``time_to_complete`` (first step at the goal, over successes) and the
failure modes as fractions of all episodes: ``fail_wrong_first_move`` (the first object moved is not object 1 or goes
to the wrong slot), ``fail_dropped`` (an object ends outside every slot or still held) and ``fail_timeout`` (anything
else: the swap is not finished). Every mode that commits tokens to a latent also reports how far the observations
it received were from its own predictions, the surprise of each committed token (see ``surprise``): its median over
the clean tokens (``surprise_clean_median``) and, under a corruption, over the corrupted ones
(``surprise_corrupted_median``), with the tails a threshold must fall between (``surprise_clean_p99``,
``surprise_clean_max``, ``surprise_corrupted_p01``, ``surprise_corrupted_min``). ``memory_surprise`` adds the fraction
of clean and of corrupted tokens that its threshold flagged (``surprise_flagged_clean``,
``surprise_flagged_corrupted``): the numbers to choose ``surprise_threshold`` by for a new kind of observation.
Media: ``media/robot_<stage>_<mode>.gif`` (front and wrist cameras, the moves made).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from einops import rearrange

from datasets.robot.datamodule import action_planes, planes_to_actions, unpack_tokens
from datasets.robot.env import ACTION_DIM, REST_Z, SLOT_NAMES, SLOTS, STATE_DIM, SwapTableEnv
from datasets.robot.generate import placement
from datasets.robot.task import GOAL, START, Move, plan

from .base import DomainEvaluator, EvalContext, flatten

if TYPE_CHECKING:
    from algorithms.diffusion_forcing.module import DiffusionForcing

MODES = ("memory", "memory_flagged", "memory_surprise", "memoryless", "obs_history", "memory_imputed")
SURPRISE_COMMITS = ("flagged", "imputed")
CORRUPTIONS = ("none", "occlusion", "noise", "distractor")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a binomial proportion."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def first_move(arrangements: list[tuple]) -> Move | None:
    """The first move in a sequence of arrangements: an object that comes to rest in a slot other than the one it
    last rested in (arrangements while it is carried do not list it)."""
    last = {obj: arrangements[0].index(obj) for obj in (1, 2) if obj in arrangements[0]}
    for arrangement in arrangements[1:]:
        for obj in (1, 2):
            if obj in arrangement:
                slot = arrangement.index(obj)
                if obj in last and last[obj] != slot:
                    return Move(obj, last[obj], slot)
                last[obj] = slot
    return None


def surprise(observed: torch.Tensor, predicted: torch.Tensor, obs_channels: int) -> torch.Tensor:
    """Per-episode mean squared difference ``(n,)`` between the observation part (the first ``obs_channels``
    channels) of the observed token and of the token the model predicted for it, both normalised."""
    diff = (observed[:, :obs_channels] - predicted[:, :obs_channels]).float() ** 2
    return diff.flatten(1).mean(1)


class RobotSwapEvaluator(DomainEvaluator):
    def __init__(
        self,
        num_episodes: int = 100,
        episode_steps: int = 160,
        chunk: int = 8,
        plan_tokens: int = 1,
        modes: Sequence[str] = ("memory", "memoryless"),
        corruption: str = "none",
        corrupt_tokens: Sequence[int] = (3, 9),
        flag_level: int = 800,
        surprise_threshold: float = 2.0,
        surprise_commit: str = "flagged",
        noise_std: float = 0.1,
        gif_episodes: int = 2,
        dream_videos: int = 2,
        **common: Any,  # seed, during_training: see DomainEvaluator
    ) -> None:
        super().__init__(**common)
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise ValueError(f"unknown evaluator.modes {unknown}; choose from {MODES}")
        if num_episodes < 2 or episode_steps % chunk or plan_tokens < 1:
            raise ValueError(
                "evaluator.num_episodes must be >= 2, evaluator.episode_steps a multiple of evaluator.chunk "
                f"(dataset.chunk) and evaluator.plan_tokens >= 1; got {num_episodes}, {episode_steps}, {chunk}, "
                f"{plan_tokens}"
            )
        if corruption not in CORRUPTIONS:
            raise ValueError(f"unknown evaluator.corruption {corruption!r}; choose from {CORRUPTIONS}")
        if len(corrupt_tokens) != 2 or not 0 <= corrupt_tokens[0] <= corrupt_tokens[1]:
            raise ValueError(f"evaluator.corrupt_tokens must be [first, last) token indices: {list(corrupt_tokens)}")
        self.corruption, self.corrupt_tokens = corruption, (int(corrupt_tokens[0]), int(corrupt_tokens[1]))
        self.flag_level, self.noise_std = int(flag_level), float(noise_std)
        self.surprise_threshold = float(surprise_threshold)
        if surprise_commit not in SURPRISE_COMMITS:
            raise ValueError(
                f"unknown evaluator.surprise_commit {surprise_commit!r}: how memory_surprise commits a surprising "
                f"token, one of {SURPRISE_COMMITS}"
            )
        self.surprise_commit = surprise_commit
        self.num_episodes, self.episode_steps, self.chunk = num_episodes, episode_steps, chunk
        self.plan_tokens, self.modes, self.gif_episodes = plan_tokens, list(modes), gif_episodes
        self.dream_videos = dream_videos

    @torch.no_grad()
    def rollout(self, module: DiffusionForcing, mode: str, record: int = 0) -> dict[str, Any]:
        """Run every episode in ``mode``; ``record`` episodes also keep their camera frames. Works for state tokens
        (``z_0`` encoded from the first state) and image tokens (``[cameras, action planes]``, the first
        observation committed to a learned ``z_0`` as a context token)."""
        if module.frame_stack != 1:
            raise ValueError("the swap-table policy uses one chunk per token: set algorithm.frame_stack=1")
        images = len(module.frame_shape) == 3
        history, flagged = mode == "obs_history", mode == "memory_flagged"
        n, device, size = self.num_episodes, module.device, module.frame_shape[-1]
        obs_size = 6 if images else STATE_DIM  # the observation part of a token: camera channels or state numbers
        envs = [SwapTableEnv(image_size=size if images else 32) for _ in range(n)]
        configs = [i % 2 for i in range(n)]
        states = np.stack([env.reset(placement(c, np.random.default_rng([self.seed + 20_000, i])))
                           for i, (env, c) in enumerate(zip(envs, configs))])  # fmt: skip
        generator = self.generator(device, MODES.index(mode))
        sampler, cell = module.sampler, module.sampling_cell
        noise_rng = np.random.default_rng([self.seed, 7, MODES.index(mode)])

        def observe() -> np.ndarray:  # what the policy sees, before any corruption
            if not images:
                return states.copy()
            views = np.stack([env.render() for env in envs])  # (n, 2, S, S, 3)
            return rearrange(views, "n c h w rgb -> n (c rgb) h w").astype(np.float32) / 255.0

        def frame(seen: np.ndarray, actions: np.ndarray) -> torch.Tensor:  # a normalised token from data units
            parts = [seen, action_planes(actions, size) if images else actions.reshape(n, -1)]
            return module.normalizer.normalize(torch.as_tensor(np.concatenate(parts, axis=1), device=device))

        def impute(real: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:  # the predicted observation part
            out = real.clone()
            out[:, :obs_size] = predicted[:, :obs_size]
            return out

        def fresh_latent(seen: np.ndarray) -> torch.Tensor:  # a latent that knows only this observation
            if not images:
                return module.initial_latent(n, torch.as_tensor(seen, device=device))
            context = frame(seen, np.zeros((n, self.chunk, 4), dtype=np.float32))[:, None]
            return sampler.commit_context(cell, module.initial_latent(n, None), context)

        seen = observe()
        previous = seen
        if history:  # a fresh latent at every replan (below); state tokens start from the learned z_0
            z = None if images else module.initial_latent(n, None)
        else:
            z = fresh_latent(seen)
        arrangements = [[env.arrangement()] for env in envs]
        reached = [None] * n
        frames = [[] for _ in range(record)]
        scores, corrupted_tokens = [], []  # the surprise (n,) of every committed token; whether it was corrupted
        step = 0
        for k in range(self.episode_steps // self.chunk):
            if mode == "memoryless":
                z = fresh_latent(seen)
            cond = None
            if history and images:  # z_0 encoded from the last two camera frames (n, 12, S, S)
                z = module.initial_latent(n, torch.as_tensor(np.concatenate([previous, seen], axis=1), device=device))
            elif history:
                cond = torch.as_tensor(np.concatenate([previous, seen], axis=-1), device=device)[:, None]
            with torch.autocast(device_type=device.type, enabled=False):
                tokens, _ = sampler.denoise_chunk(cell, z, 1 if history else self.plan_tokens, cond, None, generator)
            plan = module.tokens_to_frames(tokens[:, :1])[:, 0].cpu().numpy()  # data units
            if images:  # the token's last 4 channels are the action planes (after the cameras, or alone)
                actions = planes_to_actions(plan[:, -ACTION_DIM:], self.chunk)
            elif history:
                actions = plan.reshape(n, self.chunk, -1)
            else:
                actions, _ = unpack_tokens(plan, self.chunk)
            if not np.isfinite(actions).all():
                raise FloatingPointError(f"the {mode} policy produced non-finite actions at step {step}")
            for h in range(self.chunk):
                for i, env in enumerate(envs):
                    if i < record:
                        frames[i].append(env.render())
                    states[i] = env.step(actions[i, h])
                    arrangements[i].append(env.arrangement())
                    if reached[i] is None and arrangements[i][-1] == GOAL[configs[i]]:
                        reached[i] = step + 1
                step += 1
            corrupted = self.corruption != "none" and self.corrupt_tokens[0] <= k < self.corrupt_tokens[1]
            previous, seen = seen, observe()
            if corrupted:
                seen = self.corrupt(seen, envs, noise_rng)
            if not history:  # the token the policy saw joins the latent: its memory
                real = frame(seen, actions)
                score = surprise(real, tokens[:, 0], obs_size)
                scores.append(score.cpu().numpy())
                corrupted_tokens.append(corrupted)
                if mode == "memory_surprise" and self.surprise_commit == "imputed":
                    surprised = (score > self.surprise_threshold).view(-1, *[1] * (real.dim() - 1))
                    z = sampler.commit_tokens(
                        cell, z, torch.where(surprised, impute(real, tokens[:, 0]), real)[:, None]
                    )
                elif mode == "memory_surprise":
                    surprised = score > self.surprise_threshold
                    z_noisy = self.commit_noisy(sampler, cell, z, real, generator)
                    z_clean = sampler.commit_tokens(cell, z, real[:, None])
                    z = cell.select_state(surprised, z_noisy, z_clean)
                elif corrupted and flagged:
                    z = self.commit_noisy(sampler, cell, z, real, generator)
                elif corrupted and mode == "memory_imputed":  # the model's own prediction stands in, as clean
                    z = sampler.commit_tokens(cell, z, impute(real, tokens[:, 0])[:, None])
                else:
                    z = sampler.commit_tokens(cell, z, real[:, None])
        finals = [env.arrangement() for env in envs]
        held = [env.held is not None for env in envs]
        for env in envs:
            env.close()
        return {"configs": configs, "finals": finals, "held": held, "arrangements": arrangements, "reached": reached,
                "frames": frames, "mode": mode, "corrupted_tokens": np.asarray(corrupted_tokens, dtype=bool),
                "surprise": np.stack(scores, axis=1) if scores else np.zeros((n, 0))}  # fmt: skip

    def corrupt(self, seen: np.ndarray, envs: list[SwapTableEnv], rng: np.random.Generator) -> np.ndarray:
        """The observations the policy receives under ``corruption``: states ``(n, 10)`` or camera frames
        ``(n, 6, S, S)`` in [0, 1] (black frames for occlusion, clipped pixel noise, a rendered look-alike of object 2
        in the empty slot for the distractor); the environment's physics is untouched."""
        seen = seen.copy()
        if self.corruption == "occlusion":
            seen[:] = 0.0
        elif self.corruption == "noise":
            seen += rng.normal(0.0, self.noise_std, seen.shape).astype(seen.dtype)
            if seen.ndim == 4:
                seen = np.clip(seen, 0.0, 1.0)
        elif self.corruption == "distractor":
            for i, env in enumerate(envs):
                empty = [j for j, v in enumerate(env.arrangement()) if v is None]
                if not empty:
                    continue
                if seen.ndim == 4:  # the cameras see a look-alike of object 2 in the empty slot, beside the real one
                    views = env.render_with_distractor(empty[-1])
                    seen[i] = rearrange(views, "c h w rgb -> (c rgb) h w").astype(np.float32) / 255.0
                else:  # the state reports object 2 at the look-alike's place
                    seen[i, 7:10] = [*SLOTS[empty[-1]], REST_Z]
        return seen

    def commit_noisy(self, sampler, cell, z: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None):
        """Advance the latent over tokens ``x (n, ...)`` flagged as corrupted: presented at ``flag_level`` as
        ``q_sample(x, flag_level, ξ)``, so the cell weighs them as noisy observations (docs/method.md §1, §9;
        paper §4.4)."""
        if not 0 < self.flag_level < cell.schedule.num_levels:
            raise ValueError(
                f"evaluator.flag_level={self.flag_level} must lie in [1, {cell.schedule.num_levels - 1}] "
                "(algorithm.num_levels)"
            )
        level = torch.full((x.shape[0],), self.flag_level, device=x.device, dtype=torch.long)
        noise = sampler.noise(tuple(x.shape), x, generator)
        return cell.commit(z, cell.schedule.q_sample(x, level, noise)[:, None], level[:, None], None)

    def metrics(self, result: dict[str, Any]) -> dict[str, float]:
        configs, finals = result["configs"], result["finals"]
        success = [f == GOAL[c] for f, c in zip(finals, configs)]
        out: dict[str, float] = {}
        for name, idx in (("", range(len(configs))), ("config0/", range(0, len(configs), 2)),
                          ("config1/", range(1, len(configs), 2))):  # fmt: skip
            wins = sum(success[i] for i in idx)
            low, high = wilson_interval(wins, len(idx))
            out[f"{name}success_rate"], out[f"{name}success_low"], out[f"{name}success_high"] = (
                wins / len(idx),
                low,
                high,
            )
        times = [r for r, s in zip(result["reached"], success) if s and r is not None]
        out["time_to_complete"] = float(np.mean(times)) if times else float("nan")
        wrong = dropped = timeout = 0
        for i, (c, final) in enumerate(zip(configs, finals)):
            if success[i]:
                continue
            move = first_move(result["arrangements"][i])
            if move is not None and move != plan(c)[0]:
                wrong += 1
            elif result["held"][i] or sum(v is not None for v in final) < 2:
                dropped += 1
            else:
                timeout += 1
        n = len(configs)
        out["fail_wrong_first_move"], out["fail_dropped"], out["fail_timeout"] = wrong / n, dropped / n, timeout / n
        out.update(self.surprise_metrics(result))
        return out

    def surprise_metrics(self, result: dict[str, Any]) -> dict[str, float]:
        """The committed tokens' surprise ``(episodes, tokens)``, split into clean and corrupted tokens: medians, the
        tails a threshold must fall between (the clean tokens' 99th percentile and maximum, the corrupted ones' 1st
        percentile and minimum: a threshold in ``(surprise_clean_max, surprise_corrupted_min)`` separates them all),
        and for ``memory_surprise`` the fraction of each that the threshold flagged; empty without committed tokens."""
        scores, corrupted = result.get("surprise"), result.get("corrupted_tokens")
        if scores is None or scores.size == 0:
            return {}
        out: dict[str, float] = {}
        for name, columns in (("clean", ~corrupted), ("corrupted", corrupted)):
            part = scores[:, columns]
            if part.size == 0:
                continue
            out[f"surprise_{name}_median"] = float(np.median(part))
            if name == "clean":
                out["surprise_clean_p99"], out["surprise_clean_max"] = float(np.quantile(part, 0.99)), float(part.max())
            else:
                out["surprise_corrupted_p01"] = float(np.quantile(part, 0.01))
                out["surprise_corrupted_min"] = float(part.min())
            if result.get("mode") == "memory_surprise":
                out[f"surprise_flagged_{name}"] = float(np.mean(part > self.surprise_threshold))
        return out

    def compute(self, module: DiffusionForcing, ctx: EvalContext) -> dict[str, float] | None:
        if not self.is_rank_zero():  # episodes are cheap next to training: rank zero runs them all once
            return None
        per_mode = {}
        for mode in self.modes:
            result = self.rollout(module, mode, record=min(self.gif_episodes, self.num_episodes))
            per_mode[mode] = self.metrics(result)
            if result["frames"] and result["frames"][0]:
                path = ctx.media(f"robot_{ctx.stage}_{mode}.gif")
                self.write_gif(path, result)
                ctx.log_video(f"{ctx.stage}/robot_{mode}", path)
        cameras = len(module.frame_shape) == 3 and module.frame_shape[0] == 6 + ACTION_DIM  # not the DP-like tokens
        if cameras and self.dream_videos > 0:
            path = ctx.media(f"robot_{ctx.stage}_dream.gif")
            self.dream(module, path)
            ctx.log_video(f"{ctx.stage}/robot_dream", path)
        return flatten(per_mode)

    @torch.no_grad()
    def dream(self, module: DiffusionForcing, path) -> np.ndarray:
        """The task's video generated from its first frame alone (paper Fig. 4c): the first camera frames of
        ``dream_videos`` episodes (alternating configurations) become context tokens, then the sampler rolls out a
        whole episode of tokens; their camera channels are written as a gif (front over wrist, one column each).
        Returns the frames ``(E, K + 1, 2, S, S, 3)`` uint8."""
        from PIL import Image

        size, n, device = module.frame_shape[-1], self.dream_videos, module.device
        env = SwapTableEnv(image_size=size)
        first = []
        for i in range(n):
            env.reset(placement(i % 2, np.random.default_rng([self.seed + 30_000, i])))
            first.append(rearrange(env.render(), "c h w rgb -> (c rgb) h w").astype(np.float32) / 255.0)
        env.close()
        context = np.concatenate([np.stack(first), np.zeros((n, 4, size, size), dtype=np.float32)], axis=1)
        context = module.normalizer.normalize(torch.as_tensor(context, device=device))[:, None]
        z = module.sampler.commit_context(module.sampling_cell, module.initial_latent(n, None), context)
        tokens = module.sampler.rollout(module.sampling_cell, z, self.episode_steps // self.chunk,
                                        generator=self.generator(device, 99))  # fmt: skip
        generated = module.tokens_to_frames(tokens)[:, :, :6].clamp(0, 1).cpu().numpy()  # (n, K, 6, S, S)
        video = np.concatenate([np.stack(first)[:, None], generated], axis=1)
        video = (rearrange(video, "n k (c rgb) h w -> n k c h w rgb", rgb=3) * 255).round().astype(np.uint8)
        images = []
        for t in range(video.shape[1]):
            columns = [np.concatenate(list(video[i, t]), axis=0) for i in range(n)]  # (2S, S, 3) per episode
            grid = np.kron(np.concatenate(columns, axis=1), np.ones((4, 4, 1), dtype=np.uint8))
            images.append(Image.fromarray(grid))
        images[0].save(path, save_all=True, append_images=images[1:], duration=200, loop=0)
        return video

    def write_gif(self, path, result: dict[str, Any]) -> None:
        """Recorded episodes side by side (front over wrist camera, 4× enlarged); the title strip names the start
        arrangement and the final one."""
        from PIL import Image, ImageDraw

        episodes = result["frames"]
        images = []
        for t in range(len(episodes[0])):
            columns = [np.concatenate(list(ep[t]), axis=0) for ep in episodes]  # (2H, W, 3) per episode
            grid = np.kron(np.concatenate(columns, axis=1), np.ones((4, 4, 1), dtype=np.uint8))
            canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + 14), "white")
            canvas.paste(Image.fromarray(grid), (0, 14))
            label = "  ".join(
                f"c{c}: {_name(START[c])} -> {_name(f)}" for c, f in zip(result["configs"], result["finals"])
            )
            ImageDraw.Draw(canvas).text((2, 1), label[: grid.shape[1] // 6], fill="black")
            images.append(canvas)
        images[0].save(path, save_all=True, append_images=images[1:], duration=80, loop=0)


def _name(arrangement: tuple) -> str:
    return "".join("-" if v is None else str(v) for v in arrangement) + f"({SLOT_NAMES})"
