"""workbench.tokenizer: a real Hugging Face fast tokenizer, one token per character."""
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from workbench.tasks import TASKS, get_task
from workbench.tokenizer import (BOS, EOS, PAD, SPECIALS, UNK, build_tokenizer, encode_text, token_strings,
                                 vocab_mismatch)

ADD_CHARSET = "0123456789+=,|"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(ADD_CHARSET)


def test_is_a_fast_hf_tokenizer(tok):
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.padding_side == "left"


def test_special_ids_and_vocab_layout(tok):
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == (PAD, BOS, EOS, UNK)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == list(SPECIALS)
    # characters follow the specials in sorted order
    expected = {c: 4 + i for i, c in enumerate(sorted(ADD_CHARSET))}
    vocab = tok.get_vocab()
    assert len(tok) == len(vocab) == 4 + len(ADD_CHARSET)
    for c, i in expected.items():
        assert vocab[c] == i


def test_charset_order_and_duplicates_do_not_matter():
    a = build_tokenizer("0123456789+=,|")
    b = build_tokenizer("|,=+9876543210" + "0123")
    assert a.get_vocab() == b.get_vocab()
    assert vocab_mismatch(a, b) is None


def test_bos_prepended_and_one_token_per_char(tok):
    text = "00123+04567="
    ids = tok(text)["input_ids"]
    vocab = tok.get_vocab()
    assert ids == [tok.bos_token_id] + [vocab[c] for c in text]
    assert tok(text, add_special_tokens=False)["input_ids"] == [vocab[c] for c in text]
    assert encode_text(tok, text) == [vocab[c] for c in text]
    assert encode_text(tok, text, add_bos=True) == ids
    assert EOS not in token_strings(tok, ids)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_round_trip_of_every_task_text(name):
    task = get_task(name)
    tok = build_tokenizer(task.charset)
    vocab = tok.get_vocab()
    for split in task.splits:
        for p in task.problems(40, seed=3, split=split):
            text = p.prompt + p.solution
            ids = encode_text(tok, text, add_bos=True)
            assert ids == [tok.bos_token_id] + [vocab[c] for c in text]
            assert tok.decode(ids, skip_special_tokens=True) == text
            assert tok.decode(ids) == BOS + text
            assert "".join(token_strings(tok, ids[1:])) == text
            # with EOS appended, skipping specials still gives the text back exactly
            assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text


def test_spaces_are_ordinary_characters():
    tok = build_tokenizer("ab ")
    for text in ["ab ba", " a", "a  b ", "  "]:
        ids = encode_text(tok, text)
        assert len(ids) == len(text)
        assert tok.decode(ids) == text


def test_token_strings_shows_specials(tok):
    ids = [tok.bos_token_id] + encode_text(tok, "1+2") + [tok.eos_token_id, tok.pad_token_id]
    assert token_strings(tok, ids) == ["<bos>", "1", "+", "2", "<eos>", "<pad>"]


def test_batch_padding_is_left_with_pad_id(tok):
    enc = tok(["12", "1"], padding=True)
    one, two = tok.get_vocab()["1"], tok.get_vocab()["2"]
    assert enc["input_ids"] == [[1, one, two], [0, 1, one]]
    assert enc["attention_mask"] == [[1, 1, 1], [0, 1, 1]]


def test_save_and_autotokenizer_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert loaded.get_vocab() == tok.get_vocab()
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token, loaded.unk_token) == (PAD, BOS, EOS, UNK)
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
    assert loaded.padding_side == "left"
    task = get_task("addition")
    for p in task.problems(20, seed=1):
        text = p.prompt + p.solution
        assert loaded(text)["input_ids"] == tok(text)["input_ids"]
        assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text
    assert vocab_mismatch(tok, loaded) is None


def test_encode_text_refuses_unknown_characters(tok):
    with pytest.raises(ValueError) as e:
        encode_text(tok, "12a+3b=")
    msg = str(e.value)
    assert "['a', 'b']" in msg and "charset" in msg
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        encode_text(tok, "1\n2")


def test_build_tokenizer_rejects_bad_charsets():
    with pytest.raises(ValueError, match="empty character set"):
        build_tokenizer("")
    with pytest.raises(ValueError, match="whitespace"):
        build_tokenizer("ab\n")


def test_vocab_mismatch():
    add = build_tokenizer(get_task("addition").charset)
    mul = build_tokenizer(get_task("multiply").charset)
    assert vocab_mismatch(add, build_tokenizer(get_task("addition").charset)) is None
    msg = vocab_mismatch(add, mul)
    assert msg is not None
    assert "vocabularies differ" in msg and "sizes 18 vs 19" in msg and "only in second: ['*']" in msg
    # same vocabulary, different special-token ids
    other = build_tokenizer(get_task("addition").charset)
    other.eos_token = UNK
    msg = vocab_mismatch(add, other)
    assert msg == "eos_token_id differs (2 vs 3)"
