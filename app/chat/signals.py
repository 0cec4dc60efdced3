from blinker import Namespace

room_read = Namespace().signal("chat.room-read")
