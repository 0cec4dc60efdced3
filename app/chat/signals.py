"""Signals other areas subscribe to, so they follow chat without chat importing them.

``room_read`` is sent after a user reads a room (opened it, or marked it read over the socket),
as ``room_read.send(app, user_id=<int>, room_id=<int>)``: the notifications area marks that
room's notifications read, so a DM or mention is never cleared twice.
"""

from blinker import Namespace

room_read = Namespace().signal("chat.room-read")
