from django import forms


class AskForm(forms.Form):
    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "autofocus": True}), max_length=4000)
    effort = forms.ChoiceField(choices=[("low", "low"), ("medium", "medium"), ("high", "high")], initial="medium")
    budget = forms.IntegerField(required=False, min_value=512, help_text="prompt tokens; empty for the default")
