"""The rule pages in docs/rules/<CODE>.md, generated from the catalogue plus an example per rule.

    python -m ssdaudit.rule_docs          # rewrite docs/rules/
A test checks that the committed pages equal what this writes, so the pages never drift from the catalogue.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .findings import RULES

LINT_RULES = {"R001", "R002", "R003", "R004", "R005", "R009", "E999"}
LINT_ONLY = {"R009", "E999"}

EXAMPLES: dict[str, tuple[str, str]] = {
    "R001": ("self.blocks = [Block(c) for c in channels]   # plain list", "self.blocks = nn.ModuleList(Block(c) for c in channels)"),
    "R002": ("self.scales = [nn.Parameter(torch.ones(c)) for c in channels]", "self.scales = nn.ParameterList(nn.Parameter(torch.ones(c)) for c in channels)"),
    "R003": ("self.heads = SimpleNamespace(cls=nn.Linear(d, k), box=nn.Linear(d, 4))", "self.heads = nn.ModuleDict({\"cls\": nn.Linear(d, k), \"box\": nn.Linear(d, 4)})"),
    "R004": ("self.priors = make_priors()          # a plain tensor, read in forward()", "self.register_buffer(\"priors\", make_priors(), persistent=False)"),
    "R005": ("def forward(self, x):\n    return nn.LayerNorm(x.shape[-1])(x)   # new, untrained, every call",
             "self.norm = nn.LayerNorm(d)         # in __init__\n...\ndef forward(self, x):\n    return self.norm(x)"),
    "R006": ("self.drops = [nn.Dropout(0.1)]       # model.eval() never reaches it", "self.drops = nn.ModuleList([nn.Dropout(0.1)])"),
    "N001": ("self.head.weight = self.embed.weight  # tied on purpose", "(nothing to fix)"),
    "N002": ("for p in model.backbone.parameters():\n    p.requires_grad_(False)", "(intended when fine-tuning; otherwise remove the freeze)"),
    "N003": ("ssdaudit params model.py              # model.py has no example_input()", "ssdaudit params model.py --input-shape 1,3,300,300"),
    "N004": ("ssdaudit params model.py --input-shape 1,3,300,300   # batch 1: BatchNorm fails in train mode", "ssdaudit params model.py --input-shape 2,3,300,300"),
    "N005": ("self.limit = self.steps.clone()      # 0-dim: mixes with any device", "self.register_buffer(\"limit\", self.steps.clone(), persistent=False)"),
    "N006": ("self._teacher = [teacher.requires_grad_(False)]   # kept out of state_dict on purpose", "self._teacher[0].to(device)           # move it yourself with the model"),
    "R007": ("self.scale = random.random()          # used in forward, not in state_dict()", "self.register_buffer(\"scale\", torch.tensor(random.random()))"),
    "R008": ("def _apply(self, fn, recurse=True):   # skips self.scale\n    ...", "register the tensor and let nn.Module._apply move it"),
    "R009": ("self.w = nn.Parameter(torch.empty(n)).to(device)   # a plain tensor on a GPU", "self.w = nn.Parameter(torch.empty(n, device=device))"),
    "E999": ("def forward(self, x)                  # missing colon", "def forward(self, x):"),
    "G001": ("self.backbone = list(blocks)          # forward() runs them, the optimizer never sees them", "self.backbone = nn.ModuleList(blocks)"),
    "G002": ("feats = self.backbone(x).detach()     # nothing below this line trains", "feats = self.backbone(x)"),
    "G003": ("opt = SGD(model.head.parameters(), lr=0.01)   # the backbone's gradients are thrown away", "opt = SGD(model.parameters(), lr=0.01)"),
    "G004": ("SGD([{\"params\": backbone, \"lr\": 0.0}, {\"params\": head}], lr=0.01)", "SGD([{\"params\": backbone, \"lr\": 0.001}, {\"params\": head}], lr=0.01)"),
    "G005": ("x = self.stem(x) * 1e-6               # gradients below vanish", "x = self.stem(x)                     # (and a normalisation layer)"),
    "G006": ("loss = (p * torch.log(p)).sum()       # log(0) = -inf", "loss = (p * torch.log(p.clamp_min(1e-12))).sum()"),
    "C001": ("ssdaudit diff fixed.pth buggy.pth     # 312 backbone.* tensors only in A", "register the backbone (nn.ModuleList) and save again"),
    "C002": ("ssdaudit diff voc.pth coco.pth        # conf.*: 21 classes against 81", "build the model with the checkpoint's number of classes"),
    "C003": ("torch.save(model.half().state_dict(), \"model.pth\")", "torch.save(model.float().state_dict(), \"model.pth\")"),
    "C004": ("ssdaudit diff epoch1.pth epoch30.pth  # backbone.*: 312 tensors unchanged", "ssdaudit gradflow run/ names why (G002/G003/G004)"),
    "C005": ("ssdaudit diff last.pth best.pth       # conf.3.weight: 12 NaN in A", "resume from the last finite checkpoint with a lower learning rate"),
    "C006": ("torch.save({\"w\": big[:10]}, \"small.pth\")  # writes all of big's storage", "torch.save({\"w\": big[:10].clone()}, \"small.pth\")"),
}


def page(code: str) -> str:
    r = RULES[code]
    bad, good = EXAMPLES[code]
    found_by = ("`ssdaudit lint` (source)" if code in LINT_ONLY
                else "`ssdaudit lint` (source) and `ssdaudit params` (runtime)" if code in LINT_RULES and code != "R005"
                else "`ssdaudit lint` (source) and `ssdaudit params` (runtime probe)" if code == "R005"
                else "`ssdaudit params`" if code[0] in "RN" else "`ssdaudit gradflow`" if code[0] == "G" else "`ssdaudit diff`")
    silence = [
        f"- On one line (lint): `# ssdaudit: ignore[{code}]`" if code in LINT_RULES else None,
        f"- In `ssdaudit check`: `ignore = [\"{code}\"]` under `[tool.ssdaudit]` in pyproject.toml",
        "- For existing findings only: record them with `ssdaudit check --baseline FILE --write-baseline`",
        f"- On the command line: `ssdaudit lint --ignore {code}`" if code in LINT_RULES else None,
    ]
    return "\n".join([
        f"# {code} {r.name}",
        "",
        f"**What it finds:** {r.summary}.",
        "",
        f"Reported by {found_by}.",
        "",
        "## Why it matters",
        "",
        r.why,
        "",
        "## Example",
        "",
        "```python",
        bad,
        "```",
        "",
        "## Fix",
        "",
        r.fix[:1].upper() + r.fix[1:] + ":",
        "",
        "```python",
        good,
        "```",
        "",
        "## Silence it",
        "",
        *[s for s in silence if s],
        "",
    ])


def write_pages(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for code in RULES:
        path = folder / f"{code}.md"
        path.write_text(page(code))
        out.append(path)
    index = ["# Rules", "", "| code | name | finds |", "|---|---|---|"]
    index += [f"| [{c}]({c}.md) | {r.name} | {r.summary} |" for c, r in RULES.items()]
    (folder / "README.md").write_text("\n".join(index) + "\n")
    return out


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "docs/rules"
    print(f"wrote {len(write_pages(target))} rule pages to {target}")
