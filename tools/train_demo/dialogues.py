"""Turns WordNet entries into chat dialogues and plain dictionary prose.

Every answer is built from WordNet's own definitions and examples inside a
small set of grammatical English sentence frames, so the model learns to
answer "what does X mean?"-style questions with real sentences.
"""
import random

DETERMINERS = ("a ", "an ", "the ", "any ", "one ", "someone ", "something ", "some ")
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "r": "adverb"}


def article(word):
    return "an" if word[:1].lower() in "aeiou" else "a"


def cap(text):
    return text[:1].upper() + text[1:]


def clean_definition(text):
    text = text.strip().rstrip(".").strip()
    return text.replace("  ", " ")


def is_proper(word):
    return word[:1].isupper()


def join_words(words, quote=True):
    items = ['"%s"' % w if quote else w for w in words]
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def sense_sentence(pos, word, definition, rng):
    """One sentence saying what `word` means in one sense."""
    d = clean_definition(definition)
    if pos == "n":
        if is_proper(word):
            return "%s is %s." % (word, d) if d.lower().startswith(DETERMINERS) else \
                '"%s" refers to %s.' % (word, d)
        if d.lower().startswith(("a ", "an ")):
            return "%s %s is %s." % (cap(article(word)), word, d)
        return rng.choice(['"%s" means %s.' % (cap(word), d),
                           'The word "%s" means %s.' % (word, d)])
    if pos == "v":
        if d.lower().startswith("to "):
            d = d[3:]
        return rng.choice(["To %s means to %s." % (word, d),
                           'The verb "%s" means to %s.' % (word, d)])
    if pos == "a":
        return rng.choice(['"%s" is an adjective that means %s.' % (cap(word), d),
                           'The adjective "%s" means %s.' % (word, d)])
    return rng.choice(['"%s" is an adverb that means %s.' % (cap(word), d),
                       'The adverb "%s" means %s.' % (word, d)])


def example_sentence(example):
    text = example.strip()
    text = cap(text)
    if text[-1:] not in ".!?":
        text += "."
    return text


class DialogueMaker:
    """Builds dialogue turns (question, answer) about one lemma."""

    def __init__(self, wordnet, rng):
        self.wn = wordnet
        self.rng = rng

    def entries(self, lemma):
        """[(pos, synset)] for a lemma, most frequent sense first, per part of speech."""
        out = []
        for pos in ("n", "v", "a", "r"):
            keys = self.wn.senses.get((lemma, pos), [])
            out.extend((pos, self.wn.synsets[k]) for k in keys if k in self.wn.synsets)
        return out

    def meaning_question(self, word, pos):
        rng = self.rng
        forms = ["What does %s mean?", "What does the word %s mean?", 'What does "%s" mean?',
                 "What is the meaning of %s?", "Define %s.", "Can you define %s?",
                 "What's the definition of %s?", "Tell me what %s means.",
                 "Explain the word %s.", "%s meaning", "Meaning of %s?",
                 "I don't know what %s means. Can you help?", "What do people mean by %s?"]
        if pos == "n":
            forms += ["What is %s?"]
        if pos == "n" and not is_proper(word):
            forms += ["What is %s %%s?" % article(word), "What's %s %%s?" % article(word)] * 2
        if pos == "n" and is_proper(word):
            forms += ["Who or what is %s?", "Tell me about %s."]
        if pos == "v":
            forms += ["What does it mean to %s?"] * 2
        if pos == "a":
            forms += ["What does it mean to be %s?"] * 2
        q = rng.choice(forms) % word
        r = rng.random()
        if r < 0.15:
            q = q.lower()
        elif r < 0.22:
            q = q.rstrip("?.")
        return q

    def meaning_answer(self, lemma, entries, max_senses=3):
        rng = self.rng
        picked = entries[:max_senses] if rng.random() < 0.5 else entries[:2]
        first_pos, first = picked[0]
        word = self.wn.surface(first, lemma)
        if not first.definitions:
            return None
        parts = [sense_sentence(first_pos, word, first.definitions[0], rng)]
        if first.examples and rng.random() < 0.7:
            parts.append('For example: "%s"' % example_sentence(first.examples[0]))
        synonyms = [w for w in first.words if w.lower() != lemma][:3]
        if synonyms and rng.random() < 0.5:
            parts.append("Similar words are %s." % join_words(synonyms) if len(synonyms) > 1
                         else 'A similar word is "%s".' % synonyms[0])
        others = [(p, s) for p, s in picked[1:] if s.definitions]
        if others and rng.random() < 0.8:
            lead = "It can also mean" if rng.random() < 0.5 else "Another meaning is"
            for pos, syn in others:
                d = clean_definition(syn.definitions[0])
                if pos == "v" and not d.startswith("to "):
                    d = "to " + d
                if pos != first_pos:
                    parts.append("As %s %s, it means %s." % (article(POS_NAMES[pos]), POS_NAMES[pos], d))
                else:
                    parts.append("%s %s." % (lead, d))
                    lead = "It can also mean"
        prefix = rng.choice(["", "", "", "", "Sure. ", "Good question. "])
        return prefix + " ".join(parts)

    def synonym_turn(self, lemma, pos, syn):
        others = [w for w in syn.words if w.lower() != lemma][:4]
        if not others:
            return None
        word = self.wn.surface(syn, lemma)
        q = self.rng.choice(["What is another word for %s?", "Give me a synonym for %s.",
                             "What is a synonym of %s?", "Which words mean the same as %s?",
                             "Synonyms for %s?"]) % word
        if len(others) == 1:
            a = 'Another word for "%s" is "%s".' % (word, others[0])
        else:
            a = 'Words that mean the same as "%s" include %s.' % (word, join_words(others))
        d = clean_definition(syn.definitions[0]) if syn.definitions else None
        if d and self.rng.random() < 0.7:
            a += " They all mean %s." % (("to " + d) if pos == "v" and not d.startswith("to ") else d)
        return q, a

    def antonym_turn(self, lemma, syn):
        ants = self.wn.antonyms(syn, lemma)
        if not ants:
            return None
        word = self.wn.surface(syn, lemma)
        q = self.rng.choice(["What is the opposite of %s?", "What is an antonym of %s?",
                             "What word means the opposite of %s?", "Opposite of %s?"]) % word
        a = 'The opposite of "%s" is "%s".' % (word, ants[0])
        return q, a

    def example_turn(self, lemma, pos, syn):
        usable = [e for e in syn.examples if lemma.split()[0] in e.lower()]
        if not usable:
            return None
        word = self.wn.surface(syn, lemma)
        q = self.rng.choice(["Use %s in a sentence.", "Can you give me an example sentence with %s?",
                             "How do I use the word %s?", "Show me how to use %s in a sentence."]) % word
        a = self.rng.choice(["Here is an example: ", "Sure: ", "For example: ", ""])
        a += '"%s"' % example_sentence(usable[0])
        if len(usable) > 1 and self.rng.random() < 0.5:
            a += ' Another example is "%s"' % example_sentence(usable[1])
        return q, a

    def kind_turn(self, lemma, syn):
        hypers = self.wn.related(syn, ("@", "@i"))
        if not hypers:
            return None
        word = self.wn.surface(syn, lemma)
        hyper = hypers[0].words[0]
        instance = any(sym == "@i" for sym, _, _, _ in syn.pointers)
        if is_proper(word) or instance:
            q = self.rng.choice(["What kind of thing is %s?", "What is %s an example of?"]) % word
            a = "%s is an example of %s %s." % (word, article(hyper), hyper)
        else:
            q = self.rng.choice(["What kind of thing is %s %s?", "What is %s %s a type of?",
                                 "What category does %s %s belong to?"]) % (article(word), word)
            a = "%s %s is a kind of %s." % (cap(article(word)), word, hyper)
        if syn.definitions and self.rng.random() < 0.6:
            a += " " + sense_sentence("n", word, syn.definitions[0], self.rng)
        return q, a

    def kinds_turn(self, lemma, syn):
        hypos = self.wn.related(syn, ("~",))
        names = []
        for h in hypos:
            w = h.words[0]
            if w.lower() != lemma and w not in names:
                names.append(w)
        if len(names) < 2:
            return None
        self.rng.shuffle(names)
        names = names[:self.rng.randint(2, 5)]
        word = self.wn.surface(syn, lemma)
        q = self.rng.choice(["Can you name some kinds of %s?", "What are some types of %s?",
                             "Give me examples of %s.", "List a few kinds of %s."]) % word
        a = "Some kinds of %s are %s." % (word, join_words(names, quote=False))
        return q, a

    def part_turn(self, lemma, syn):
        wholes = self.wn.related(syn, ("#p",))
        if not wholes:
            return None
        word = self.wn.surface(syn, lemma)
        whole = wholes[0].words[0]
        q = self.rng.choice(["What is %s %s part of?", "Where would you find %s %s?"]) % (article(word), word)
        if is_proper(whole):
            a = "%s %s is part of %s." % (cap(article(word)), word, whole)
        else:
            a = "%s %s is part of %s %s." % (cap(article(word)), word, article(whole), whole)
        return q, a

    def spelling_turn(self, word):
        q = self.rng.choice(["How do you spell %s?", "Spell %s.", "How is %s spelled?"]) % word
        letters = "-".join(c for c in word if c != " ")
        return q, '"%s" is spelled %s.' % (cap(word) if False else word, letters)

    def turns_for(self, lemma):
        """All question/answer turns that can be made about a lemma, meaning first."""
        entries = self.entries(lemma)
        if not entries:
            return []
        pos, syn = entries[0]
        word = self.wn.surface(syn, lemma)
        turns = []
        answer = self.meaning_answer(lemma, entries)
        if answer:
            turns.append((self.meaning_question(word, pos), answer))
        makers = [lambda: self.synonym_turn(lemma, pos, syn),
                  lambda: self.example_turn(lemma, pos, syn)]
        if pos == "a":
            makers.append(lambda: self.antonym_turn(lemma, syn))
        if pos == "n":
            makers += [lambda: self.kind_turn(lemma, syn), lambda: self.kinds_turn(lemma, syn),
                       lambda: self.part_turn(lemma, syn)]
        for make in makers:
            t = make()
            if t:
                turns.append(t)
        if " " not in lemma and lemma.isalpha() and len(lemma) <= 12 and self.rng.random() < 0.15:
            turns.append(self.spelling_turn(word))
        return turns

    def prose(self, lemma):
        """A dictionary-style paragraph about a lemma, or None."""
        entries = self.entries(lemma)
        parts = []
        for pos, syn in entries[:3]:
            if not syn.definitions:
                continue
            word = self.wn.surface(syn, lemma)
            parts.append(sense_sentence(pos, word, syn.definitions[0], self.rng))
            for ex in syn.examples[:1]:
                parts.append('One might say: "%s"' % example_sentence(ex))
        return " ".join(parts) if parts else None
