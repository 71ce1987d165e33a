"""--method vlm: captions + summary (mode B), grid (mode A), prompts, resume; against a real local
chat-completions server, a tiny random-weight transformers LLaVA, and zoo:world-llava."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import neuronatlas as na
from neuronatlas.backends.chat import ChatError, ResponseCache, RetryPolicy, load_chat_client
from neuronatlas.describe import describe
from neuronatlas.describe.summarize import NAME as OFFLINE, summarize_captions
from neuronatlas.describe.vlm import parse_label
from neuronatlas.errors import UserError
from neuronatlas.run import LabelProgress
from tests.backends.chat_server import ChatServer

COLOR_UNITS = ["units:9", "units:11", "units:12", "units:14", "units:18", "units:19"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("vlm") / "run"
    return na.record("zoo:synthetic-units", "world:n=60,size=64,seed=0", path, layers="units", k=8,
                     batch_size=30, num_workers=0, save_acts=True)


@pytest.fixture
def server():
    with ChatServer() as s:
        yield s


def http(server, **kw):
    return load_chat_client(f"openai:test-vlm@{server.url}",
                            retry=kw.pop("retry", RetryPolicy(max_retries=3, base_delay=0.001)), **kw)


# -- the offline summariser and the label parser ---------------------------------------------------
def test_offline_summariser_on_a_hand_made_example():
    caps = ["A red circle on a gray background.", "A large red circle next to a tree.",
            "A blue square on a gray background."]
    out = summarize_captions(caps, [3.0, 2.0, 1.0])
    # weights 1/2, 1/3, 1/6: "red circle" is in captions 1 and 2 (5/6) and absorbs "red", "circle";
    # "gray background" (1 and 3: 2/3) absorbs "gray" and "background"; then "large red circle"
    # (1/3, absorbing "large", "large red"), longer first among the 1/3 ties ("tree").
    assert [p.phrase for p in out] == ["red circle", "gray background", "large red circle", "tree",
                                      "blue square"]
    assert [p.score for p in out] == pytest.approx([5 / 6, 2 / 3, 1 / 3, 1 / 3, 1 / 6])
    # background captions of random images remove what every image shows
    bg = ["A green tree on a gray background.", "A gray background."]
    out = summarize_captions(caps, [3.0, 2.0, 1.0], background=bg)
    assert out[0].phrase == "red circle" and out[0].score == pytest.approx(5 / 6)
    gray = [p for p in out if p.phrase == "gray background"]
    assert not gray or gray[0].score == pytest.approx(2 / 3 - 1)  # never ranked above red circle
    assert "tree" not in [p.phrase for p in out][:2]
    # activations weight the votes: with the blue square strongest, "blue square" wins
    assert summarize_captions(caps, [0.1, 0.1, 5.0])[0].phrase in ("blue square", "gray background")
    assert summarize_captions(caps, [0.1, 0.1, 5.0])[0].score > 0.9
    with pytest.raises(ValueError):
        summarize_captions(caps, [1.0])


def test_label_parser():
    assert parse_label("FINAL SUMMARY: All show red things.\nLABEL: red objects.") == \
        ("red objects", "All show red things.")
    assert parse_label("They are all striped. Some are blue.")[0] == "They are all striped"
    assert parse_label("No commonalities found.")[0] == "no common theme"
    assert parse_label("")[0] == "no description"
    assert parse_label("**LABEL:** \"checkered heart\"")[0] == "checkered heart"


# -- describe over HTTP ----------------------------------------------------------------------------
def test_captions_with_offline_summariser(run, server, tmp_path):
    df = describe(run, "vlm", vlm=http(server), units=COLOR_UNITS, k=6, n_background=16,
                  cache=tmp_path / "c.sqlite", show_progress=False)
    top = df[df["rank"] == 0].set_index("unit")
    truth = run.units.set_index("unit")["truth"]
    assert [top.label[u] for u in COLOR_UNITS] == [truth[u] for u in COLOR_UNITS]  # red, yellow...
    assert set(df["summarizer"]) == {OFFLINE} and set(df["mode"]) == {"captions"}
    caps = json.loads(top.captions["units:9"])
    assert len(caps) == 6 and "red" in caps[0]  # strongest exemplar first
    stored = run.labels("vlm")
    assert len(stored) == len(df) and set(stored.method) == {"vlm"}
    cfg = run.label_config("vlm")
    assert cfg["summarizer"] == OFFLINE and cfg["llm"] is None and cfg["n_background"] == 16
    # token accounting: what the server billed for the answers it gave
    assert cfg["usage"]["vlm"]["prompt_tokens"] == server.prompt_tokens
    assert cfg["usage"]["vlm"]["requests"] == server.requests
    # images shared by several units' top lists are asked once
    assert server.requests < 16 + 6 * 6


def test_captions_with_llm_summary(run, server, tmp_path):
    c = http(server, cache=tmp_path / "c.sqlite")
    df = describe(run, "vlm", vlm=c, llm=c, units=COLOR_UNITS[:3], k=4, show_progress=False)
    assert df.label.iloc[0] == "red"
    for r in df.itertuples():  # each label is the server-LLM's reading of that unit's captions
        assert r.label == ChatServer.answer(" ".join(json.loads(r.captions)), []).split()[-1]
    assert df.description.iloc[0] == "The images share the colour red."
    assert set(df.summarizer) == {f"llm:{c.name}"}
    summaries = [b for b in server.bodies if isinstance(b["messages"][0]["content"], str)]
    assert len(summaries) == 3 and "[" in summaries[0]["messages"][0]["content"]  # activations
    assert "4 images" in summaries[0]["messages"][0]["content"]


def test_grid_mode_with_heatmaps(run, server, tmp_path):
    df = describe(run, "vlm", vlm=http(server), mode="grid", heatmap=True, units=COLOR_UNITS[:2],
                  k=4, tile_size=64, cache=None, show_progress=False)
    assert set(run.labels("vlm-grid").method) == {"vlm-grid"} and df.heatmap.all()
    assert server.requests == 2
    parts = server.bodies[0]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text"] and "4 images" in parts[1]["text"]
    assert "heatmap" in parts[1]["text"]
    import base64
    import io

    from PIL import Image

    grid = Image.open(io.BytesIO(base64.b64decode(parts[0]["image_url"]["url"].split(",")[1])))
    assert grid.size == (2 * 64 + 4, 2 * 64 + 4)  # 2 x 2 tiles, 4 px gaps
    assert df.label.iloc[0].startswith("a picture with")


def test_heatmap_tiles_differ_from_plain(run):
    from neuronatlas.recording.replay import probe_for_run
    from neuronatlas.describe.vlm_images import unit_tiles

    probe = probe_for_run(run)
    plain = unit_tiles(run, "units:9", 3, False, probe)
    heat = unit_tiles(run, "units:9", 3, True, probe)
    assert [t.index for t in plain] == [t.index for t in heat] == list(run.topk("units:9", 3)["index"])
    a, b = np.asarray(plain[0].image, float), np.asarray(heat[0].image, float)
    assert a.shape == b.shape and np.abs(a - b).mean() > 5 and heat[0].heatmap


def test_prompt_override_directory(run, server, tmp_path):
    d = tmp_path / "prompts"
    d.mkdir()
    (d / "caption.txt").write_text("List the colours you see.")
    describe(run, "vlm", vlm=http(server), units=COLOR_UNITS[:1], k=2, n_background=0, prompts=d,
             cache=None, show_progress=False)
    texts = [b["messages"][0]["content"][1]["text"] for b in server.bodies]
    assert texts == ["List the colours you see."] * 2
    assert run.label_config("vlm")["prompts_dir"] == str(d)
    with pytest.raises(UserError, match="not a directory"):
        describe(run, "vlm", vlm=http(server), prompts=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="caption.txt"):
        describe(run, "vlm", vlm=http(server), prompts=tmp_path / "empty")


def test_bad_options(run, server):
    with pytest.raises(UserError, match="--vlm"):
        describe(run, "vlm")
    with pytest.raises(UserError, match="--mode"):
        describe(run, "vlm", vlm=http(server), mode="tiles")
    with pytest.raises(UserError, match="unknown chat"):
        describe(run, "vlm", vlm="gpt-4o")
    with pytest.raises(UserError, match="out of range"):
        describe(run, "vlm", vlm=http(server), units=["units:999"])


def test_interrupted_run_resumes_where_it_stopped(run, tmp_path):
    opts = dict(units=COLOR_UNITS, k=4, n_background=4, concurrency=2, show_progress=False)
    with ChatServer() as ref:  # the same labelling, uninterrupted
        want = describe(run, "vlm", vlm=http(ref), cache=tmp_path / "ref.sqlite", **opts)
        unique = ref.answered
    cache = tmp_path / "c.sqlite"
    with ChatServer() as s:
        s.fail_from = 14  # the backend dies after 13 requests
        with pytest.raises(ChatError, match="kept failing"):
            describe(run, "vlm", vlm=http(s, retry=RetryPolicy(max_retries=1, base_delay=0.001)),
                     cache=cache, **opts)
        first = s.answered
        assert 4 <= first < unique
        assert len(ResponseCache(cache)) == first  # every answer received was kept
        partial = list((run.path / "labels" / ".partial").glob("vlm-*.jsonl"))
        assert len(partial) == 1
        finished = LabelProgress(run.path, partial[0].stem).read()
        assert 1 <= len(finished) < len(COLOR_UNITS)
        s.fail_from = None
        before = s.requests
        got = describe(run, "vlm", vlm=http(s), cache=cache, **opts)
        assert s.requests - before == unique - first  # only what was missing was asked
    pd.testing.assert_frame_equal(got.drop(columns="method"), want.drop(columns="method"))
    assert not partial[0].exists()  # finished: the partial file is gone


# -- local models ----------------------------------------------------------------------------------
TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
            "{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")


def tiny_llava_dir(path):
    """A real LlavaForConditionalGeneration (random weights) + LlavaProcessor saved to `path`."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import (CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)

    words = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "user", "assistant", "system", ":",
             "describe", "this", "image", "a", "red", "circle", "is", "there", "?", "yes", "no"]
    tok = Tokenizer(WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>",
                                   extra_special_tokens={"image_token": "<image>"})
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                             crop_size={"height": 32, "width": 32}),
                          tokenizer=fast, patch_size=8, vision_feature_select_strategy="default",
                          chat_template=TEMPLATE, num_additional_image_tokens=1)
    torch.manual_seed(0)
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=32, patch_size=8,
                           hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
        text_config=dict(model_type="llama", vocab_size=len(words), hidden_size=32,
                         intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, pad_token_id=0, bos_token_id=2, eos_token_id=3),
        image_token_index=4, vision_feature_layer=-1)
    LlavaForConditionalGeneration(cfg).save_pretrained(path)
    proc.save_pretrained(path)
    return path


QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|> "
                 "{% else %}{{ c['text'] }} {% endif %}{% endfor %}<|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")


def tiny_qwen2_vl_dir(path):
    """A real Qwen2VLForConditionalGeneration (random weights) + Qwen2VLProcessor saved to `path`;
    images are resized to 56 x 56 px = 4 x 4 patches of 14, merged 2 x 2 into 4 image tokens."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    words = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>",
             "<|vision_end|>", "<|video_pad|>", "user", "assistant", "describe", "this", "image", "red"]
    tok = Tokenizer(WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<|im_end|>",
                                   extra_special_tokens={"image_token": "<|image_pad|>",
                                                         "video_token": "<|video_pad|>"})
    images = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14,
                                   merge_size=2, temporal_patch_size=2)
    proc = Qwen2VLProcessor(image_processor=images, tokenizer=fast,
                            video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_TEMPLATE)
    cfg = Qwen2VLConfig(
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, mlp_ratio=2),
        text_config=dict(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=256, bos_token_id=None, eos_token_id=3,
                         pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                          "mrope_section": [2, 3, 3]}),
        image_token_id=5, video_token_id=7, vision_start_token_id=4, vision_end_token_id=6)
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(cfg).save_pretrained(path)
    proc.save_pretrained(path)
    return path


def test_hf_vlm_client_on_a_tiny_qwen2_vl(tmp_path):
    from PIL import Image

    from neuronatlas.backends.chat import ChatRequest

    path = tiny_qwen2_vl_dir(tmp_path / "qwen")
    c = load_chat_client(f"hf-vlm:{path}", cache=None)
    img = Image.new("RGB", (60, 40), (220, 30, 30))
    r = c.chat(ChatRequest.user("describe this image", [img], max_tokens=4))
    # <|im_start|> user <|vision_start|> <|image_pad|> x 4 <|vision_end|> describe this image
    # <|im_end|> <|im_start|> assistant
    assert r.prompt_tokens == 10 + 4 and 1 <= r.completion_tokens <= 4
    assert c.chat(ChatRequest.user("describe this image", [img], max_tokens=4)).text == r.text
    assert c.usage.snapshot()["prompt_tokens"] == 2 * 14


def test_hf_vlm_client_on_a_tiny_llava(run, tmp_path):
    from PIL import Image

    from neuronatlas.backends.chat import ChatRequest

    path = tiny_llava_dir(tmp_path / "llava")
    c = load_chat_client(f"hf-vlm:{path}", cache=tmp_path / "c.sqlite")
    img = Image.new("RGB", (40, 50), (220, 30, 30))
    r = c.chat(ChatRequest.user("describe this image", [img], max_tokens=5))
    # "user : <image>x16 describe this image assistant :": the processor expanded the image token
    assert r.prompt_tokens == 2 + 16 + 3 + 2 and 1 <= r.completion_tokens <= 5
    assert isinstance(r.text, str) and not r.cached
    # greedy decoding is deterministic; the second answer comes from the cache
    c2 = load_chat_client(f"hf-vlm:{path}", cache=None)
    assert c2.chat(ChatRequest.user("describe this image", [img], max_tokens=5)).text == r.text
    assert c.chat(ChatRequest.user("describe this image", [img], max_tokens=5)).cached
    df = describe(run, "vlm", vlm=c, units=COLOR_UNITS[:2], k=2, n_background=2, max_tokens=4,
                  show_progress=False)
    assert len(df[df["rank"] == 0]) == 2
    assert run.label_config("vlm")["vlm"]["model_id"].startswith(f"hf-vlm:{path}#")
    with pytest.raises(UserError, match="could not be loaded"):
        load_chat_client(f"hf-vlm:{tmp_path / 'missing'}")


def test_world_llava_end_to_end(tmp_path):
    """record zoo:synthetic-units -> describe --method vlm with zoo:world-llava -> evaluate. The
    model's accuracy is not asserted (it is being retrained); the pipeline is."""
    from neuronatlas.evaluate import evaluate

    torch.set_num_threads(1)
    run = na.record("zoo:synthetic-units", "world:n=48,size=64,seed=0", tmp_path / "run",
                    layers="units", k=6, batch_size=24, num_workers=0, save_acts=True)
    units = ["units:0", "units:9", "units:14", "units:40", "units:80"]
    df = describe(run, "vlm", vlm="zoo:world-llava", units=units, k=4, n_background=6,
                  show_progress=False)
    assert set(df[df["rank"] == 0].unit) == set(units)
    cfg = run.label_config("vlm")
    assert cfg["vlm"]["model_id"].startswith("zoo:world-llava#") and cfg["summarizer"] == OFFLINE
    assert cfg["usage"]["vlm"]["prompt_tokens"] > 0
    with pytest.raises(UserError, match="cannot summarise text"):
        describe(run, "vlm", vlm="zoo:world-llava", llm="zoo:world-llava", units=units)
    grid = describe(run, "vlm", vlm="zoo:world-llava", mode="grid", heatmap=True, units=units[:2],
                    k=4, show_progress=False)
    assert len(grid) == 2 and grid.heatmap.all()
    again = describe(run, "vlm", vlm="zoo:world-llava", units=units, k=4, n_background=6,
                     show_progress=False)  # everything cached now
    assert run.label_config("vlm")["usage"]["vlm"]["requests"] == 0
    pd.testing.assert_frame_equal(again, df)
    summary = evaluate(run, methods=["vlm", "vlm-grid"], embedder=None, scorer="zoo:world-clip")
    metrics = set(zip(summary.metric, summary.method))
    for m in ("vlm", "vlm-grid"):
        assert ("exact", m) in metrics and ("simulation_pearson", m) in metrics
    gt = run.evaluation("ground_truth")
    assert set(gt[gt.method == "vlm"].unit) == set(units)


def test_command_line_describe_vlm_and_evaluate_detection(run, server):
    import subprocess
    import sys

    cli = [sys.executable, "-m", "neuronatlas.cli"]
    spec = f"openai:test-vlm@{server.url}"
    r = subprocess.run([*cli, "describe", str(run.path), "--method", "vlm", "--vlm", spec, "--k", "3",
                        "--concurrency", "2", "--no-heatmap"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "labelled 111 units with vlm" in r.stdout
    assert f"vlm: {server.requests} requests" in r.stdout and "prompt +" in r.stdout
    assert server.max_in_flight <= 2
    top = run.labels("vlm").query("rank == 0").set_index("unit")["label"]
    assert top["units:9"] == "red"
    r = subprocess.run([*cli, "evaluate", str(run.path), "--methods", "vlm", "--no-simulation",
                        "--detection", "--judge", "zoo:world-clip"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "detection_auroc" in r.stdout
    det = run.evaluation("detection")
    assert len(det) == 111 and det.auroc.between(0, 1).all()
    assert set(det.judge) == {"scorer:world-clip"}
    r = subprocess.run([*cli, "describe", str(run.path), "--method", "netdissect", "--vlm", spec],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "only apply to --method vlm" in r.stderr
    r = subprocess.run([*cli, "describe", str(run.path), "--method", "vlm", "--vlm", "nope:x"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown chat/VLM client" in r.stderr


def test_ctrl_c_keeps_finished_units_and_stops_quickly(run, tmp_path):
    import os
    import signal
    import threading
    import time

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    opts = dict(units=COLOR_UNITS, k=4, n_background=0, concurrency=2, show_progress=False,
                cache=tmp_path / "c.sqlite")
    old = signal.signal(signal.SIGINT, interrupt)
    try:
        with ChatServer(delay=0.25) as s:
            timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            t0 = time.time()
            with pytest.raises(KeyboardInterrupt):
                describe(run, "vlm", vlm=http(s), **opts)
            stopped = time.time() - t0
            timer.join()
            asked = s.requests
            time.sleep(0.6)
            assert s.requests == asked  # nothing new is started after Ctrl-C
            partial = list((run.path / "labels" / ".partial").glob("vlm-*.jsonl"))
            kept = LabelProgress(run.path, partial[0].stem).read() if partial else {}
            assert len(ResponseCache(tmp_path / "c.sqlite")) == s.answered
            s.delay = 0
            got = describe(run, "vlm", vlm=http(s), **opts)
        assert stopped < 1.0 + 2 * 0.25 + 1.0  # the calls in flight finish, the rest are dropped
        assert set(got.unit) == set(COLOR_UNITS) and len(kept) < len(COLOR_UNITS)
    finally:
        signal.signal(signal.SIGINT, old)


def test_label_progress_survives_a_torn_line(tmp_path):
    p = LabelProgress(tmp_path, "vlm-abc")
    p.append({"unit": "units:1", "captions": ["a"]})
    with open(p.path, "a") as f:
        f.write('{"unit": "units:2", "capt')  # a crash mid-write
    assert set(p.read()) == {"units:1"}
    p.append({"unit": "units:3", "captions": []})
    assert set(p.read()) == {"units:1", "units:3"}
    p.finish()
    assert not p.path.exists() and p.read() == {}
