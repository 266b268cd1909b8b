"""The shadow comparison (#27 item 5): edge scores beside the central model's, per event."""
