"""The ten questions whose greedy answers go into the model card (fixed before training)."""
QUESTIONS = [
    "What does happy mean?",
    "What is a dog?",
    "Define ocean.",
    "What does it mean to run?",
    "What is the opposite of hot?",
    "What is another word for big?",
    "Use the word bread in a sentence.",
    "What kind of thing is a violin?",
    "Hello! Who are you?",
    "What does the word library mean?",
]
