#!/usr/bin/env python3
"""Writes data/verbs.txt, the verb corpus: Spanish verb conjugations, one tense of one verb a line.

Deterministic (no randomness): rerunning it reproduces the committed file byte for byte.
Usage: python3 scripts/make_verb_corpus.py > data/verbs.txt
"""

PERSONS = ["yo", "tú", "él", "nosotros", "vosotros", "ellos"]

# Regular endings by conjugation class, one list of six persons per tense.
ENDINGS = {
    "ar": {
        "presente": ["o", "as", "a", "amos", "áis", "an"],
        "pretérito": ["é", "aste", "ó", "amos", "asteis", "aron"],
        "imperfecto": ["aba", "abas", "aba", "ábamos", "abais", "aban"],
    },
    "er": {
        "presente": ["o", "es", "e", "emos", "éis", "en"],
        "pretérito": ["í", "iste", "ió", "imos", "isteis", "ieron"],
        "imperfecto": ["ía", "ías", "ía", "íamos", "íais", "ían"],
    },
    "ir": {
        "presente": ["o", "es", "e", "imos", "ís", "en"],
        "pretérito": ["í", "iste", "ió", "imos", "isteis", "ieron"],
        "imperfecto": ["ía", "ías", "ía", "íamos", "íais", "ían"],
    },
}
# Future and conditional attach to the whole infinitive, for every class.
FUTURE = ["é", "ás", "á", "emos", "éis", "án"]
CONDITIONAL = ["ía", "ías", "ía", "íamos", "íais", "ían"]

REGULAR = [
    "hablar", "cantar", "bailar", "caminar", "trabajar", "estudiar", "mirar", "escuchar",
    "cocinar", "limpiar", "llamar", "llegar", "lavar", "nadar", "viajar", "comprar",
    "comer", "beber", "correr", "deber", "aprender", "comprender", "vender", "temer",
    "romper", "meter", "vivir", "escribir", "abrir", "subir", "decidir", "recibir",
    "partir", "cubrir", "asistir", "unir",
]

# A few irregular verbs, present tense only, spelled out.
IRREGULAR_PRESENT = {
    "ser": ["soy", "eres", "es", "somos", "sois", "son"],
    "estar": ["estoy", "estás", "está", "estamos", "estáis", "están"],
    "tener": ["tengo", "tienes", "tiene", "tenemos", "tenéis", "tienen"],
    "ir": ["voy", "vas", "va", "vamos", "vais", "van"],
    "hacer": ["hago", "haces", "hace", "hacemos", "hacéis", "hacen"],
    "poder": ["puedo", "puedes", "puede", "podemos", "podéis", "pueden"],
    "querer": ["quiero", "quieres", "quiere", "queremos", "queréis", "quieren"],
    "decir": ["digo", "dices", "dice", "decimos", "decís", "dicen"],
}


def line(verb, tense, forms):
    pairs = ", ".join(f"{p} {f}" for p, f in zip(PERSONS, forms))
    return f"{verb} ({tense}): {pairs}."


def main():
    out = []
    for verb in REGULAR:
        stem, cls = verb[:-2], verb[-2:]
        for tense, ends in ENDINGS[cls].items():
            forms = [stem + e for e in ends]
            # Preterite spelling: -car/-gar keep their sound in the first person.
            if tense == "pretérito" and verb.endswith("gar"):
                forms[0] = stem + "ué"
            out.append(line(verb, tense, forms))
        out.append(line(verb, "futuro", [verb + e for e in FUTURE]))
        out.append(line(verb, "condicional", [verb + e for e in CONDITIONAL]))
    for verb, forms in IRREGULAR_PRESENT.items():
        out.append(line(verb, "presente", forms))
    print("\n".join(out))


if __name__ == "__main__":
    main()
