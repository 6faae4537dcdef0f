"""memops.app.data.babi: the bAbI reader on small files the tests write (malformed ones included), the
split, vocabulary and padding, and on the real files where ../shared/data/babi is present."""

import os

import pytest
import torch

from memops.app.data import DataFormatError
from memops.app.data.babi import (BabiVocab, encode, find_babi_file, load_babi_task, read_babi,
                                  split_validation)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BABI = os.environ.get("MEMOPS_BABI_DATA", os.path.join(REPO, "..", "shared", "data", "babi"))
real_data = pytest.mark.skipif(not os.path.isdir(os.path.join(BABI, "en")),
                               reason=f"the bAbI files are not at {BABI} (set MEMOPS_BABI_DATA)")

STORY = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Where is Daniel? \thallway\t4
1 Mary got the apple.
2 Mary got the football there.
3 What is Mary carrying? \tapple,football\t1 2
"""


def write(tmp_path, text, name="qa1_test_train.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_stories_questions_answers_supports(tmp_path):
    ex = read_babi(write(tmp_path, STORY))
    assert len(ex) == 3
    assert ex[0].story == (("mary", "moved", "to", "the", "bathroom"), ("john", "went", "to", "the", "hallway"))
    assert ex[0].question == ("where", "is", "mary") and ex[0].answer == ("bathroom",)
    assert ex[0].supports == (0,) and ex[0].task == 1 and ex[0].line == 3
    assert len(ex[1].story) == 3 and ex[1].supports == (2,)  # questions are not memories
    assert ex[2].story[0][0] == "mary" and len(ex[2].story) == 2  # a new story at line number 1
    assert ex[2].answer == ("apple", "football") and ex[2].answer_text == "apple,football"
    assert ex[2].supports == (0, 1)


@pytest.mark.parametrize("text, line, words", [
    ("1 Mary moved.\n3 John went.\n", 2, "does not follow 1"),
    ("1 Mary moved.\nno number here\n", 2, "expected 'NUMBER text'"),
    ("1 Mary moved.\n2 Where is Mary?\tbathroom\n", 2, "3 tab-separated fields"),
    ("1 Mary moved.\n2 Where is Mary?\tbathroom\t7\n", 2, "supporting fact '7'"),
    ("1 Mary moved.\n2 Where is Mary?\tbathroom\t2\n", 2, "supporting fact '2'"),  # a question, not a statement
    ("1 Mary moved.\n2 Where is Mary?\t\t1\n", 2, "empty answer"),
    ("1 .\n", 1, "empty statement"),
])
def test_malformed_files_name_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError) as e:
        read_babi(path)
    assert str(e.value).startswith(f"{path}:{line}: ") and words in str(e.value)
    assert e.value.line == line


def test_not_utf8(tmp_path):
    path = tmp_path / "qa2_x_train.txt"
    path.write_bytes(b"1 Mary \xff moved.\n")
    with pytest.raises(DataFormatError, match=":1: not valid UTF-8"):
        read_babi(path)


def test_split_is_deterministic_and_ten_percent(tmp_path):
    ex = read_babi(write(tmp_path, STORY * 1))
    many = [e for _ in range(40) for e in ex]
    train, valid = split_validation(many)
    assert len(valid) == 12 and len(train) == 108
    assert split_validation(many) == (train, valid)
    assert split_validation(many, seed=1) != (train, valid)


def test_vocab_and_padding(tmp_path):
    ex = read_babi(write(tmp_path, STORY))
    vocab = BabiVocab.build(ex)
    assert vocab.answers == ["apple,football", "bathroom", "hallway"]
    assert BabiVocab.from_dict(vocab.to_dict()).answers == vocab.answers
    batch = encode(ex, vocab, memory_size=2)
    assert batch.story.shape == (3, 2, 6) and batch.question.shape == (3, 4)  # L: the longest sentence
    # slot 0 is the most recent statement; older ones beyond memory_size are dropped
    assert vocab.words.decode(batch.story[1, 0, :5].tolist()) == ["daniel", "went", "back", "to", "the"]
    assert batch.story[0, 1, 0] == vocab.words.encode(["mary"])[0]
    assert batch.labels.tolist() == [1, 2, 0]
    assert batch.supports[0].tolist() == [1, -1]  # Mary's fact is one statement back
    assert batch.supports[1].tolist() == [0, -1]
    assert batch.supports[2].tolist() == [1, 0]
    assert batch.task.tolist() == [1, 1, 1]
    # a shorter story is padded with empty sentences (all zeros)
    assert torch.equal(encode(ex[:1], vocab).story[0], encode(ex, vocab).story[0, :2, :5])
    assert (encode(ex, vocab).story[0, :2, 5:] == 0).all()


def test_find_and_joint_loading(tmp_path):
    (tmp_path / "en").mkdir()
    write(tmp_path / "en", STORY * 10, "qa1_a_train.txt")
    write(tmp_path / "en", STORY.replace("Mary", "Sandra") * 10, "qa3_b_train.txt")
    assert find_babi_file(tmp_path, 3, size="1k").endswith("qa3_b_train.txt")
    with pytest.raises(FileNotFoundError, match="qa2_"):
        find_babi_file(tmp_path, 2, size="1k")
    train, valid = load_babi_task(tmp_path / "en", "all")
    assert len(train) + len(valid) == 60 and {e.task for e in train} == {1, 3}
    assert len(valid) == 6  # 10% of each file


@real_data
def test_real_files():
    for task in range(1, 21):
        ex = read_babi(find_babi_file(BABI, task, size="1k"))
        assert len(ex) == 1000 and all(e.task == task for e in ex)
        assert all(e.supports for e in ex)
    lists = read_babi(find_babi_file(BABI, 8, size="1k"))
    assert any(len(e.answer) > 1 for e in lists)
    train, valid = load_babi_task(os.path.join(BABI, "en"), 1)
    assert len(train) == 900 and len(valid) == 100
