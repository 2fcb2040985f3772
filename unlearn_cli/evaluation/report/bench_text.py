"""The opening of BENCHMARKS.md (`unlearn report --bench`): its title and the protocol in words."""

BENCH_TITLE = "Benchmarks"
BENCH_PREAMBLE = """
Written by `make bench` (`unlearn run -m sweep=bench`, then `unlearn report --bench`); do not edit
by hand. Protocol (docs/benchmark.md): dataset animal_mnist, the default CNN, the report seeds
10, 11, 12 (every default was tuned on the tuning seeds 0 and 1, never on these); two scenarios,
class-wise (`forget_class=elephant`) and random (`forget_fraction=0.1`); two variants, the full
training set (`animal_mnist`) and an original that memorises 2,000 images
(`animal_mnist[train_limit=2000]`, `variant=memorise`). Each cell is mean ± sample std over the
seeds. Methods run with their per-scenario defaults; a method documented as unsuited to a
scenario (docs/methods.md) is still listed there, for the record; `damaged` marks rows whose
mean RA or TA fell more than 5 points below retrain's. Metrics are percentages
except `mia_auc` (0-1), `time_s` (wall seconds of the unlearning step alone; for retrain, its
training) and `speedup` (retrain time_s / method time_s). `avg_gap` is the mean of |m - m_retrain|
over UA, RA, TA and MIA: lower is better, retrain is 0 by definition. `val_gap`, the tuning
objective, is the same mean with the validation split's accuracy and MIA in place of TA and
MIA: defaults are chosen on it, with the utility rule (docs/benchmark.md says which sweeps
were re-run with it).
`mia_attack_acc` is the
MIA attack's accuracy on its own retain-vs-test fit set: near 50 it separates nothing, and MIA
then says only on which side of an arbitrary boundary the forget set fell (0 and 100 alike).
Rows are sorted by avg_gap;
"original (no unlearning)" is the untouched trained model, the do-nothing reference.
`cost_units` counts network passes (3 x sample gradients + forward-only samples) and
`cost_ratio` is retrain's count over the method's: a figure no machine load moves.
"retrain, other seed" is the noise floor: its avg_gap is the gap between retrained models of
different seeds (a retrain of seed+1 against each run's retrain where the runs have one, else
every pair of the seeds' retrains; its UA/RA/TA/MIA are then retrain's). No method can be told
from retraining below it: `within_floor` says yes where a row's mean avg_gap is at most the floor's.
Retrain's time_s is measured when the retrained model is first trained and kept with it in the
model cache; for fresh timings run `make bench` on a quiet machine after
`rm -r outputs/cache/models`.
Literature reference (CIFAR-10, ResNet-18, random 10%, SalUn Table 1): avg gap fine-tune 3.78,
gradient ascent 4.12, influence unlearning 4.06, random labels 7.15, SalUn 1.15 at 16x retrain.
`ngplus` is NG+ as Deep Unlearn (arXiv 2410.01276) runs it, with its published defaults (10
passes over the retain set, lr 0.01, batch 256, no clipping, eval mode): the baseline that paper
says to beat; `negative_gradient` is our NG+-style method with defaults tuned here.
`diverged` says on how many seeds a method's loss or weights went non-finite: those runs count
with their last good weights' figures. `msg` and
`conv_transpose` are the two methods that paper ranks best.
Each scenario's "Inside the model" table holds the penultimate-layer evidence (docs/metrics.md,
"What the representation figures can and cannot show"): linear-probe and 5-NN accuracy on the
forgotten class and on all classes (class forgetting), linear CKA to the retrained model's
features on the forget set and the test images, and `forgotten_in`, which says whether a
method that forgot the class in its outputs also forgot it in its features.
"""
