"""Quick check of the minimal-norm and l1 attacks vs their peers on the digits CNN of the tests
(128 held-out images, one thread): median minimal norm (and fooled fraction) and seconds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/minimal_norm_digits.py
"""
# ruff: noqa: E401, E402, E501, E701, E702, E731, I001
import sys, time, torch
sys.path.insert(0, "tests/attacks")
from conftest import train_digits_cnn
import peers
from advimage.attacks import FMN, DDN, DeepFool, APGD
from advimage.lp_balls import lp_norms
t = train_digits_cnn(); m, x, y = t.model, t.x[:128], t.y[:128]
def med(adv, norm):
    with torch.no_grad(): ok = m(adv).argmax(1) != y
    n = torch.where(ok, lp_norms(adv - x, norm), torch.inf)
    return n.median().item(), ok.float().mean().item()
for norm in ["linf","l2","l1","l0"]:
    t0=time.time(); a = FMN(norm=norm).run(m,x,y).x_adv; t1=time.time(); b = peers.fb_fmn(m,x,y,norm); t2=time.time()
    print("fmn", norm, "ours", med(a,norm), f"{t1-t0:.2f}s", "fb", med(b,norm), f"{t2-t1:.2f}s")
t0=time.time(); a = DDN().run(m,x,y).x_adv; t1=time.time(); b = peers.fb_ddn(m,x,y); t2=time.time()
print("ddn ours", med(a,"l2"), f"{t1-t0:.2f}s", "fb", med(b,"l2"), f"{t2-t1:.2f}s")
for norm in ["l2","linf"]:
    t0=time.time(); a = DeepFool(norm=norm).run(m,x,y).x_adv; t1=time.time(); b = peers.fb_deepfool(m,x,y,norm); t2=time.time()
    print("deepfool", norm, "ours", med(a,norm), f"{t1-t0:.2f}s", "fb", med(b,norm), f"{t2-t1:.2f}s")
t0=time.time(); b = peers.ta_deepfool(m,x,y); t1=time.time(); print("ta deepfool l2", med(b,"l2"), f"{t1-t0:.2f}s")
for eps in [1.0]:
    t0=time.time(); a = APGD(norm="l1", eps=eps).__call__(m,x,y); t1=time.time(); b = peers.pa_apgd(m,x,y,eps,100); t2=time.time()
    with torch.no_grad(): print("apgd-l1", eps, "ours robust", (m(a).argmax(1)==y).float().mean().item(), f"{t1-t0:.2f}s", "pa", (m(b).argmax(1)==y).float().mean().item(), f"{t2-t1:.2f}s", (b-x).abs().flatten(1).sum(1).max().item())
