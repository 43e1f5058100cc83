"""What the customer pages say, in each language they are written in.

The language is the message's locale, chosen with the same fallback as templates
(:func:`outreach.config.pick_locale`: ``hy-AM`` → ``hy`` → English).
"""

from __future__ import annotations

from typing import Mapping

from outreach.config import pick_locale

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "prefs_title": "Your message preferences",
        "hello": "Hello, {name}",
        "hello_anonymous": "Hello",
        "address": "This message went to {address}.",
        "unsubscribe_one": "Unsubscribe from {channel}",
        "unsubscribed_one": "Done: you will get no more {channel} from us.",
        "channels": "How we reach you",
        "categories": "What we send",
        "category_marketing": "Offers and news",
        "transactional_note": "Receipts and order updates still reach you on the channels you keep.",
        "fewer": "Fewer messages",
        "fewer_none": "As many as we usually send",
        "fewer_week": "At most one a week",
        "fewer_month": "At most one a month",
        "save": "Save my choices",
        "saved": "Your choices are saved.",
        "everything": "Unsubscribe from everything",
        "everything_done": "You are unsubscribed from everything: we will not write to you again.",
        "feedback_title": "How did we do?",
        "feedback_question": "How happy are you with us?",
        "rating_1": "Very unhappy", "rating_2": "Unhappy", "rating_3": "Neither",
        "rating_4": "Happy", "rating_5": "Very happy",
        "comment": "Anything you would like to tell us? (optional)",
        "send": "Send",
        "thanks": "Thank you! We have your answer.",
        "choose_rating": "Please choose a rating from 1 to 5.",
        "bad_link": "This link does not work. If you copied it, please check it is complete.",
        "channel_email": "email", "channel_sms": "text messages (SMS)",
    },
    "hy": {
        "prefs_title": "Ձեր հաղորդագրությունների կարգավորումները",
        "hello": "Բարև, {name}",
        "hello_anonymous": "Բարև",
        "address": "Այս հաղորդագրությունն ուղարկվել է {address} հասցեին։",
        "unsubscribe_one": "Դադարեցնել՝ {channel}",
        "unsubscribed_one": "Պատրաստ է․ այլևս չեք ստանա մեզանից՝ {channel}։",
        "channels": "Ինչպես ենք կապվում ձեզ հետ",
        "categories": "Ինչ ենք ուղարկում",
        "category_marketing": "Առաջարկներ և նորություններ",
        "transactional_note": "Պատվերների և վճարումների մասին հաղորդագրությունները կշարունակեն "
                              "գալ ձեր պահած ալիքներով։",
        "fewer": "Ավելի քիչ հաղորդագրություններ",
        "fewer_none": "Այնքան, որքան սովորաբար ուղարկում ենք",
        "fewer_week": "Շաբաթը առավելագույնը մեկ",
        "fewer_month": "Ամիսը առավելագույնը մեկ",
        "save": "Պահպանել ընտրությունս",
        "saved": "Ձեր ընտրությունը պահպանված է։",
        "everything": "Հրաժարվել ամեն ինչից",
        "everything_done": "Դուք հրաժարվել եք ամեն ինչից․ այլևս չենք գրի ձեզ։",
        "feedback_title": "Ինչպե՞ս էր",
        "feedback_question": "Որքանո՞վ եք գոհ մեզանից",
        "rating_1": "Շատ դժգոհ", "rating_2": "Դժգոհ", "rating_3": "Միջին",
        "rating_4": "Գոհ", "rating_5": "Շատ գոհ",
        "comment": "Կուզե՞ք մի բան ասել մեզ (պարտադիր չէ)",
        "send": "Ուղարկել",
        "thanks": "Շնորհակալություն։ Ձեր պատասխանը ստացանք։",
        "choose_rating": "Խնդրում ենք ընտրել գնահատական 1-ից 5։",
        "bad_link": "Այս հղումը չի աշխատում։ Եթե պատճենել եք այն, ստուգեք, որ ամբողջական է։",
        "channel_email": "էլ. նամակներ", "channel_sms": "SMS հաղորդագրություններ",
    },
    "tl": {
        "prefs_title": "Ang iyong mga kagustuhan sa mensahe",
        "hello": "Kumusta, {name}",
        "hello_anonymous": "Kumusta",
        "address": "Ipinadala ang mensaheng ito sa {address}.",
        "unsubscribe_one": "Itigil ang {channel}",
        "unsubscribed_one": "Tapos na: hindi ka na makakatanggap ng {channel} mula sa amin.",
        "channels": "Paano ka namin inaabot",
        "categories": "Ang ipinapadala namin",
        "category_marketing": "Mga alok at balita",
        "transactional_note": "Matatanggap mo pa rin ang mga resibo at update sa order sa mga "
                              "paraang pinanatili mo.",
        "fewer": "Mas kaunting mensahe",
        "fewer_none": "Gaya ng karaniwan naming ipinapadala",
        "fewer_week": "Hanggang isa bawat linggo",
        "fewer_month": "Hanggang isa bawat buwan",
        "save": "I-save ang mga pinili ko",
        "saved": "Na-save na ang iyong mga pinili.",
        "everything": "Mag-unsubscribe sa lahat",
        "everything_done": "Naka-unsubscribe ka na sa lahat: hindi na kami susulat sa iyo.",
        "feedback_title": "Kumusta ang karanasan mo?",
        "feedback_question": "Gaano ka nasiyahan sa amin?",
        "rating_1": "Lubhang hindi nasiyahan", "rating_2": "Hindi nasiyahan",
        "rating_3": "Katamtaman", "rating_4": "Nasiyahan", "rating_5": "Lubos na nasiyahan",
        "comment": "May gusto ka bang sabihin sa amin? (opsyonal)",
        "send": "Ipadala",
        "thanks": "Salamat! Natanggap namin ang iyong sagot.",
        "choose_rating": "Pumili ng marka mula 1 hanggang 5.",
        "bad_link": "Hindi gumagana ang link na ito. Kung kinopya mo ito, tiyaking kumpleto ito.",
        "channel_email": "email", "channel_sms": "text (SMS)",
    },
    "az": {
        "prefs_title": "Mesaj seçimləriniz",
        "hello": "Salam, {name}",
        "hello_anonymous": "Salam",
        "address": "Bu mesaj {address} ünvanına göndərilib.",
        "unsubscribe_one": "{channel} dayandır",
        "unsubscribed_one": "Hazırdır: artıq bizdən {channel} almayacaqsınız.",
        "channels": "Sizinlə necə əlaqə saxlayırıq",
        "categories": "Nə göndəririk",
        "category_marketing": "Təkliflər və xəbərlər",
        "transactional_note": "Sifariş və ödəniş məlumatları saxladığınız kanallarla gəlməyə "
                              "davam edəcək.",
        "fewer": "Daha az mesaj",
        "fewer_none": "Adətən göndərdiyimiz qədər",
        "fewer_week": "Həftədə ən çox bir",
        "fewer_month": "Ayda ən çox bir",
        "save": "Seçimlərimi saxla",
        "saved": "Seçimləriniz saxlanıldı.",
        "everything": "Hamısından imtina et",
        "everything_done": "Hamısından imtina etdiniz: sizə bir daha yazmayacağıq.",
        "feedback_title": "Necə idi?",
        "feedback_question": "Bizdən nə dərəcədə razısınız?",
        "rating_1": "Heç razı deyiləm", "rating_2": "Razı deyiləm", "rating_3": "Orta",
        "rating_4": "Razıyam", "rating_5": "Çox razıyam",
        "comment": "Bizə demək istədiyiniz bir şey varmı? (istəyə bağlı)",
        "send": "Göndər",
        "thanks": "Təşəkkür edirik! Cavabınızı aldıq.",
        "choose_rating": "1-dən 5-ə qədər qiymət seçin.",
        "bad_link": "Bu keçid işləmir. Onu köçürmüsünüzsə, tam olduğunu yoxlayın.",
        "channel_email": "e-poçt mesajları", "channel_sms": "SMS mesajları",
    },
}


def texts_for(locale: str) -> tuple[str, Mapping[str, str]]:
    """(the language chosen, its texts) for a customer's locale; English is the last resort, and
    any text a language lacks is taken from English."""
    chosen = pick_locale(locale, {k: None for k in TEXTS if k != "en"}) if locale else None
    lang = chosen or "en"
    return lang, {**TEXTS["en"], **TEXTS[lang]}
