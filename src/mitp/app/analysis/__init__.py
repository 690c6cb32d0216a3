"""What the commands compute beyond training one run: comparisons of methods over seeds and settings
(compare), curves against a missing modality (robustness), and a look inside a prompt method (explain).
The commands parse their arguments and print; the work is here."""
