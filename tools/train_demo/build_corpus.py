"""Builds the demo model's training corpus from WordNet 3.0.

Output: JSON lines, each either {"messages": [{"role", "content"}...]} (a chat)
or {"text": "..."} (plain dictionary prose). Lemmas are split into train and
held-out sets by a stable hash, so the held-out perplexity is measured on
words the model never saw during training.

  python3 build_corpus.py --out DIR [--wordnet /usr/share/wordnet] [--seed 1]
"""
import argparse
import hashlib
import json
import math
import os
import random
import string

from dialogues import DialogueMaker, cap
from wordnet import WordNet

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are Pensieve, a small assistant that explains English words.",
    "You are a friendly dictionary assistant. Answer in short, clear sentences.",
    "Answer the user's questions about English words.",
    "You are a concise assistant.",
]

GREETINGS = [
    ("Hello!", "Hello! I am the Pensieve demo model. Ask me what an English word means."),
    ("Hi", "Hi! I can explain English words. Which word would you like to know about?"),
    ("Hey there", "Hello! Ask me about any English word, and I will tell you what it means."),
    ("Good morning!", "Good morning! Which word shall I explain for you?"),
    ("Who are you?", "I am the Pensieve demo model, a small language model that explains the meaning of English words."),
    ("What are you?", "I am a small language model that comes with Pensieve. I know the meanings of many English words."),
    ("What can you do?", "I can tell you what English words mean, give synonyms and opposites, and use words in example sentences."),
    ("What is your name?", "My name is Pensieve demo. I am a small model that explains English words."),
    ("How are you?", "I am doing well, thank you. Is there a word you would like me to explain?"),
    ("Thank you!", "You are welcome! Ask me about another word any time."),
    ("Thanks", "You're welcome."),
    ("Goodbye", "Goodbye! It was nice talking with you."),
    ("Can you help me?", "Of course. Tell me which English word you want to understand, and I will explain it."),
    ("Who made you?", "I was trained for the Pensieve project from the WordNet dictionary."),
    ("What do you know?", "I know the meanings of many English words from the WordNet dictionary."),
]

QUESTION_OPENERS = ["Hi! ", "Hello. ", "Quick question: ", "Please tell me: ", "I have a question. "]

OFF_TOPIC = [
    "What is the weather like today?", "What time is it?", "Can you write me a poem?",
    "What is 17 times 23?", "Who will win the next election?", "Write a program in Python.",
    "What is the stock price of Apple?", "Can you book a flight for me?",
    "What happened in the news today?", "Translate this into French.",
    "Can you tell me a joke?", "What should I cook for dinner?",
]
OFF_TOPIC_ANSWERS = [
    "I am sorry, but I am a small demo model and I only know about English words. "
    "You can ask me what a word means.",
    "I cannot help with that. I am a small model that explains English words. "
    "Try asking me what a word means.",
    "That is beyond what I can do. I only know the meanings of English words.",
]


def held_out(lemma):
    return hashlib.md5(lemma.encode()).digest()[0] < 5  # about 2% of lemmas


def repeats(lemma, count, rng):
    """How many separate dialogues a lemma gets. Words that occur in the
    sense-tagged corpus (cntlist) are the ones people ask about: they get
    several dialogues each; rare single words get one most of the time, rare
    phrases and names less often, so the model's capacity goes to common words."""
    if count > 0:
        return 4 + min(8, int(math.log2(1 + count)))
    if " " not in lemma and lemma.islower():
        return 1 if rng.random() < 0.7 else 0
    return 1 if rng.random() < 0.3 else 0


def nonsense_word(rng):
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    n = rng.randint(2, 4)
    return "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(n)) + rng.choice(["", "x", "t", "n"])


def unknown_turn(rng, wn):
    word = nonsense_word(rng)
    while word in wn.lemma_counts or any((word, p) in wn.senses for p in "nvar"):
        word = nonsense_word(rng)
    q = rng.choice(["What does %s mean?", "Define %s.", "What is %s %s?"])
    q = q % (word,) if q.count("%s") == 1 else q % ("a", word)
    a = rng.choice(['I do not know the word "%s". It is not in my dictionary. Could you check the spelling?',
                    'I am not familiar with the word "%s". It may be misspelled, or it may be a very rare word.'])
    return q, a % word


def conversation(turn_groups, rng):
    """Chat messages from a list of (question, answer) turns."""
    messages = []
    if rng.random() < 0.2:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    for q, a in turn_groups:
        messages.append({"role": "user", "content": q})
        messages.append({"role": "assistant", "content": a})
    return {"messages": messages}


def lemma_conversations(maker, lemma, count, rng):
    out = []
    for _ in range(repeats(lemma, count, rng)):
        turns = maker.turns_for(lemma)
        if not turns:
            return out
        if rng.random() < 0.06:
            q, a = turns[0]
            turns[0] = (rng.choice(QUESTION_OPENERS) + q[:1].lower() + q[1:], a)
        first, rest = turns[0], turns[1:]
        rng.shuffle(rest)
        if rest and rng.random() < 0.35:
            # Follow-up questions about the same word, referring back to it.
            picked = [first] + rest[:rng.randint(1, 2)]
        elif rest and rng.random() < 0.5:
            picked = [rng.choice(turns)]
        else:
            picked = [first]
        out.append(conversation(picked, rng))
    return out


def build(wn, seed):
    rng = random.Random(seed)
    maker = DialogueMaker(wn, rng)
    lemmas = sorted({lemma for (lemma, _pos) in wn.senses})
    train, heldout = [], []
    for lemma in lemmas:
        if any(ch not in string.ascii_letters + " -'." for ch in lemma):
            continue
        dest = heldout if held_out(lemma) else train
        dest.extend(lemma_conversations(maker, lemma, wn.lemma_counts.get(lemma, 0), rng))
        if rng.random() < 0.3:
            text = maker.prose(lemma)
            if text:
                dest.append({"text": text})
    # Multi-topic chats: two or three different words in one conversation.
    pool = [c for c in train if "messages" in c and len(c["messages"]) <= 3]
    for _ in range(len(train) // 6):
        chats = rng.sample(pool, rng.randint(2, 3))
        turns = []
        for c in chats:
            msgs = [m for m in c["messages"] if m["role"] != "system"]
            q = msgs[0]["content"]
            if turns and rng.random() < 0.3:
                q = rng.choice(["And ", "Now, ", "OK. ", "Thanks. "]) + q[:1].lower() + q[1:]
            turns.append((q, msgs[1]["content"]))
        train.append(conversation(turns, rng))
    # Greetings, identity, off-topic and unknown words.
    for _ in range(len(train) // 25):
        kind = rng.random()
        if kind < 0.15:
            hq, ha = rng.choice(GREETINGS[:4])
            iq, ia = rng.choice(GREETINGS[4:9])
            turns = [(hq.rstrip("!") + "! " + iq, ha.split("!")[0] + "! " + ia)]
        elif kind < 0.4:
            turns = [rng.choice(GREETINGS)]
            if rng.random() < 0.5:
                c = rng.choice(pool)["messages"]
                c = [m for m in c if m["role"] != "system"]
                turns.append((c[0]["content"], c[1]["content"]))
        elif kind < 0.7:
            turns = [(rng.choice(OFF_TOPIC), rng.choice(OFF_TOPIC_ANSWERS))]
        else:
            turns = [unknown_turn(rng, wn)]
        train.append(conversation(turns, rng))
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--wordnet", default="/usr/share/wordnet")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    wn = WordNet(args.wordnet)
    train, heldout = build(wn, args.seed)
    os.makedirs(args.out, exist_ok=True)
    for name, docs in (("train.jsonl", train), ("heldout.jsonl", heldout)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    print("train docs %d, held-out docs %d" % (len(train), len(heldout)))


if __name__ == "__main__":
    main()
