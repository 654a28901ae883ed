"""The paper's command lines: Figure 1 (figure1_command), Figure 3 (figure3_command) and the
memorisation study (memorization_command); the root scripts and the console scripts run them."""
