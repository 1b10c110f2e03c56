"""Money as the law and the books require: VAT rates and breakdowns, discount allocation, exact refunds.

Plain Python (no framework), so every service's domain may use it: one implementation of each rule.
"""
