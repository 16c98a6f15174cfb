"""Songs: form, harmony, a melody model written section by section, arrangement and performance."""
