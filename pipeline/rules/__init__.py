"""Rules between columns that every generated row keeps (pipeline/rules/construct.py says how):
- rule.py       the rule types, `data.rules` parsed by a whitelisted grammar, and each rule's check
- found.py      `RuleSketch`: the rules the training rows keep in 100% of rows, found in one streaming pass
- construct.py  `RuleSet`: the rules applied to a table, held by reparametrising what the model learns
"""
import pipeline.codec  # noqa: F401 - first: the table encoder (pipeline/codec/table.py) imports construct.py
from pipeline.rules.construct import RuleSet, table_rules
from pipeline.rules.found import RuleSketch
from pipeline.rules.rule import Rule, parse_rules

__all__ = ["Rule", "RuleSet", "RuleSketch", "parse_rules", "table_rules"]
