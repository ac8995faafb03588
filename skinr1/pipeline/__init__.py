"""The SkinR1 pipeline: stages from data to evaluation, reused when already finished."""
