from django import forms
from django.conf import settings


class AskForm(forms.Form):
    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "autofocus": True}), max_length=4000)
    effort = forms.ChoiceField(choices=[("low", "low"), ("medium", "medium"), ("high", "high")],
                               initial=lambda: settings.LLM_EFFORT)
    budget = forms.IntegerField(required=False, min_value=512, max_value=1_000_000,
                                help_text="prompt tokens; empty for the default",
                                widget=forms.NumberInput(attrs={"placeholder": "default"}))
    conversation = forms.IntegerField(required=False, min_value=1, max_value=2**53, widget=forms.HiddenInput)
    # Folders or document paths within the matter, one per line: only they are searched.
    scope = forms.CharField(required=False, max_length=4000, strip=False)  # a folder's name may end in a space
