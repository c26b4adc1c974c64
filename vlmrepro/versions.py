"""Protocol versions: one per behaviour that shapes a result. Each reaches its rules as a param, so bumping one
reruns exactly the results it affects (lm-evaluation-harness style). Kept in this import-light module so that
parsing the workflow does not import torch."""

QUERIES = 2  # 2: queries carry the row's split (and ImageNet label_idx) for feature extraction
GENERATION = 5  # 4: per-model batching (upstream: the checkpoint's padding side, upstream's batches); rows record padding_side
# 5: right-padded rows at transformers 4.40's positions; PIL image processors; InstructBLIP's Q-Former limit
CLIP = 2  # 2: the class prompts cut at the text context are listed in the meta and the score
SCORING = 3  # 2: scores keep each item's outcome and a 95 % bootstrap interval per accuracy
# 3: empty answers counted (n_empty_answers), shown in the cell's note
LOGLIK = 4  # 2: class tokens packed into one pass over the uncopied context cache (equal within float tolerance)
# 3: PIL image processors (upstream's pixels); 4: an item any class of which passes the context is context_overflow
LOGLIK_SCORING = 3  # 2: per-item outcomes and 95 % intervals of Sum, Avg and CFG; 3: items not scored, by status
FEATURES = 3  # 2: PIL image processors (upstream's pixels); 3: items past the context listed, never truncated
PROBE = 3  # 2: the best epoch's per-item outcomes and its 95 % interval; 3: items past the context left out, counted
FINETUNE = 5  # 3: recipe.json beside the weights; LAVIS schedule and weight-decay rule, pad-to-square, tf32
# 4: answers end with the token generation stops at (BLIP-2: a newline, as LAVIS)
# 5: the model's revision names its training identity (recipe, base revision, training images' contents)
FREQUENCY = 2  # 2: a frequency bin without classes has no accuracy (was 0 %)
TINY_BUILDER = 3  # 2: the tiny OPT tokenizer adds BOS like facebook/opt's; 3: REVISION names the weights' digest
API = 1
BENCHMARK = 1
SYNTHETIC_DATA = 2  # 2: demo images named uniquely (found by file name), text-only synthetic instruction corpus
WORLD = 3  # the demo world (vlmrepro.demo.world): classes, images, corpora, mini ImageWikiQA
# 2: four values per fact, all offered by every question; class frequencies balanced over shapes and colours
# 3: a chain-of-thought MCQ of every class on top of the long tail; short answers name the class only when sure
WORLD_TRAINING = 2  # its CLIP and LLaVA trainers (vlmrepro.demo.train); 2: REVISION names the weights' digest
